"""Publishing order and live status, with a stand-in for the agents on the entry stores."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from admin_service import RunningService, StandInAgent, make_service
from qubes_portfwd.client import ForwardState, HopState

WEB = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=192.0.2.0/24"
)
QUBES = ("sys-net", "sys-firewall", "work", "personal", "other-net")


@pytest.fixture
def patient_service(tmp_path: Path) -> Iterator[RunningService]:
    running = make_service(tmp_path, agent_timeout=3.0)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def qubes_in_order_seen(agent: StandInAgent) -> list[str]:
    return [qube for qube, key in agent.first_seen if key.startswith("/qubes-portfwd/")]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_inner_hops_first_outer_first_on_removal(patient_service: RunningService) -> None:
    stores = {q: patient_service.store(q) for q in QUBES}
    with StandInAgent(stores, lambda qube, key: "applied") as agent:
        client = patient_service.client()
        client.add_forward("work", WEB)
        assert qubes_in_order_seen(agent) == ["work", "sys-firewall", "sys-net"]
        [forward] = client.forwards()
        assert forward.state == ForwardState.ACTIVE
        assert [h.state for h in forward.hops] == [HopState.APPLIED] * 3

        client.remove_forward("work", forward.id)
        removed = [q for q, key in agent.removed if key.startswith("/qubes-portfwd/")]
        assert removed == ["sys-net", "sys-firewall", "work"]
        assert client.forwards() == []


def test_failed_hop_shows_failed_and_opens_nothing_outside(
    patient_service: RunningService,
) -> None:
    stores = {q: patient_service.store(q) for q in QUBES}

    def verdict(qube: str, key: str) -> str:
        if qube == "sys-firewall" and key.startswith("/qubes-portfwd/"):
            return "nft: Error: Could not process rule: No such file or directory"
        return "applied"

    with StandInAgent(stores, verdict):
        client = patient_service.client()
        client.add_forward("work", WEB)
        [forward] = client.forwards()
        assert forward.state == ForwardState.FAILED
        assert forward.reason and "sys-firewall" in forward.reason and "nft" in forward.reason
        states = {h.qube: h.state for h in forward.hops}
        assert states == {
            "sys-net": HopState.PENDING,
            "sys-firewall": HopState.FAILED,
            "work": HopState.APPLIED,
        }
        assert "No such file" in (forward.hops[1].error or "")
        _, edge_entries = stores["sys-net"].read()
        assert not any(k.startswith("/qubes-portfwd/") for k in edge_entries)


def test_silent_agents_leave_hops_pending_then_reconcile_opens_them(
    tmp_path: Path,
) -> None:
    running = make_service(tmp_path, agent_timeout=0.05)
    running.start()
    try:
        client = running.client()
        client.add_forward("work", WEB)
        assert {h.state for h in client.forwards()[0].hops} == {HopState.PENDING}
        stores = {q: running.store(q) for q in QUBES}
        # Agents come up later: the periodic reconcile finishes the job without a change.
        with StandInAgent(stores, lambda qube, key: "applied"):
            wait_until(
                lambda: [h.state for h in client.forwards()[0].hops] == [HopState.APPLIED] * 3
            )
    finally:
        running.stop()


def test_a_slow_inner_agent_leaves_working_forwards_open_outside(tmp_path: Path) -> None:
    """An agent still busy with a new generation keeps its old rules: the hops outside it
    stay published (retracting them cut every forward at the edge); the new one waits."""
    running = make_service(tmp_path, agent_timeout=0.3)
    running.start()
    try:
        stores = {q: running.store(q) for q in QUBES}
        with StandInAgent(stores, lambda qube, key: "applied") as agent:
            client = running.client()
            client.add_forward("work", WEB)
            _, edge_before = stores["sys-net"].read()
            web_keys = {k for k in edge_before if k.startswith("/qubes-portfwd/")}
            assert web_keys

            agent.paused.add("sys-firewall")
            client.add_forward("personal", WEB.replace("srcports=80-80", "srcports=81-81"))
            _, edge = stores["sys-net"].read()
            assert {k for k in edge if k.startswith("/qubes-portfwd/")} == web_keys
            hops = {f.target: {h.qube: h.state for h in f.hops} for f in client.forwards()}
            assert hops["work"]["sys-net"] == HopState.APPLIED
            assert hops["personal"]["sys-net"] == HopState.PENDING

            agent.paused.clear()
            wait_until(
                lambda: all(h.state == HopState.APPLIED for f in client.forwards() for h in f.hops)
            )
    finally:
        running.stop()


def test_an_open_hop_is_retracted_once_a_hop_inside_it_fails(tmp_path: Path) -> None:
    running = make_service(tmp_path, agent_timeout=3.0)
    running.start()
    failing: set[str] = set()

    def verdict(qube: str, key: str) -> str:
        return "nft: Error: gone" if qube in failing else "applied"

    try:
        stores = {q: running.store(q) for q in QUBES}
        with StandInAgent(stores, verdict):
            client = running.client()
            client.add_forward("work", WEB)
            assert any(k.startswith("/qubes-portfwd/") for k in stores["sys-net"].read()[1])

            failing.add("sys-firewall")
            client.add_forward("personal", WEB.replace("srcports=80-80", "srcports=81-81"))
            _, edge = stores["sys-net"].read()
            assert not any(k.startswith("/qubes-portfwd/") for k in edge)
    finally:
        running.stop()


def test_no_hop_is_shown_applied_once_its_agent_can_see_it_taken_back(tmp_path: Path) -> None:
    """The document must say a hop is no longer applied before the write that takes it back:
    the agent removes the rules the moment it sees that write (a retraction for a hop
    failing inside, or the forward's removal)."""
    running = make_service(tmp_path, agent_timeout=3.0)
    running.start()
    failing: set[str] = set()
    seen_ahead: list[tuple[str, str]] = []
    client = running.client()

    def verdict(qube: str, key: str) -> str:
        return "nft: Error: gone" if qube in failing else "applied"

    def on_removal(qube: str, key: str) -> None:
        forward_id = key.split("/")[2]
        shown = {(f.id, h.qube): h.state for f in client.forwards() for h in f.hops}
        if shown.get((forward_id, qube)) == HopState.APPLIED:
            seen_ahead.append((qube, key))

    try:
        stores = {q: running.store(q) for q in QUBES}
        with StandInAgent(stores, verdict, on_removal) as agent:
            web = client.add_forward("work", WEB)
            failing.add("sys-firewall")
            client.add_forward("personal", WEB.replace("srcports=80-80", "srcports=81-81"))
            failing.clear()
            client.remove_forward("work", web)
            removed = {q for q, key in agent.removed if key.startswith(f"/qubes-portfwd/{web}/")}
    finally:
        running.stop()
    assert removed == {"sys-net", "sys-firewall", "work"}
    assert seen_ahead == []


def test_an_inner_hop_being_repaired_shows_pending_and_keeps_outer_hops(tmp_path: Path) -> None:
    """sys-firewall's agent found its rules gone (a base reload) and withdrew `applied` while
    it puts them back: not shown applied, not failed, and the edge is not retracted for it
    (nothing leaks: sys-firewall drops meanwhile); a new forward waits for the repair."""
    running = make_service(tmp_path, agent_timeout=3.0)
    running.start()
    repairing: set[str] = set()

    def verdict(qube: str, key: str) -> str:
        return "repairing" if qube in repairing and key.startswith("/qubes-portfwd/") else "applied"

    try:
        stores = {q: running.store(q) for q in QUBES}
        with StandInAgent(stores, verdict):
            client = running.client()
            client.add_forward("work", WEB)
            _, edge_before = stores["sys-net"].read()

            repairing.add("sys-firewall")
            client.add_forward("personal", WEB.replace("srcports=80-80", "srcports=81-81"))
            assert stores["sys-net"].read()[1] == edge_before
            hops = {f.target: {h.qube: h.state for h in f.hops} for f in client.forwards()}
            assert hops["work"] == {
                "sys-net": HopState.APPLIED,
                "sys-firewall": HopState.PENDING,
                "work": HopState.APPLIED,
            }
            assert hops["personal"]["sys-net"] == HopState.PENDING
            assert all(f.state == ForwardState.ACTIVE for f in client.forwards())

            # The repair done, as the agent reports it: the waiting forward opens outside.
            repairing.clear()
            generation, entries = stores["sys-firewall"].read()
            stores["sys-firewall"].write_status(generation, dict.fromkeys(entries, "applied"), None)
            wait_until(
                lambda: all(h.state == HopState.APPLIED for f in client.forwards() for h in f.hops)
            )
    finally:
        running.stop()


def test_service_process_restart_keeps_forwards(tmp_path: Path) -> None:
    running = make_service(tmp_path, agent_timeout=0.05)
    running.start_process()
    try:
        client = running.client()
        client.add_forward("work", WEB)
        before = client.forwards()
        pid = running.process.pid if running.process else 0
        running.stop()
        assert not running.socket_path.exists()
        with pytest.raises(ConnectionError):
            client.list_features("work")
        running.start_process()
        assert running.process is not None and running.process.pid != pid
        assert client.forwards() == before
        [name] = [n for n in client.list_features("work") if n.startswith("portfwd.")]
        assert client.get_feature("work", name).startswith(WEB)
    finally:
        running.stop()
