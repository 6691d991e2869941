"""Expiry in the service (no root): a forward is unpublished, outer hop first, and its feature
`portfwd.<id>` dropped at its expiry instant, with no command and long before the periodic
reconcile; expired outbound rules leave firewall.xml the same way."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from admin_service import RunningService, StandInAgent, make_service, simulate_reboot
from qubes_portfwd.client.connection import QubesdError

WEB = "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=0.0.0.0/0"
QUBES = ("sys-net", "sys-firewall", "work", "personal", "other-net")
HOPS = ["sys-net", "sys-firewall", "work"]
LONG_INTERVAL = 600.0  # the periodic reconcile never runs within a test
DEADLINE = 1.5  # the requirement is one second after the expiry instant


def started(tmp_path: Path, interval: float) -> RunningService:
    """The service in this process, with a reconcile interval the test chooses."""
    running = make_service(tmp_path, agent_timeout=3.0, reconcile_interval=interval)
    running.start()
    return running


def applying(running: RunningService) -> StandInAgent:
    """Agents that apply everything, so publishing never waits for a silent one."""
    return StandInAgent({q: running.store(q) for q in QUBES}, lambda qube, key: "applied")


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[RunningService, StandInAgent]]:
    running = started(tmp_path, LONG_INTERVAL)
    try:
        with applying(running) as agent:
            yield running, agent
    finally:
        running.stop()


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.01)
    return time.monotonic() - start


def forward_keys(running: RunningService, qube: str) -> list[str]:
    return [k for k in running.store(qube).read()[1] if k.startswith("/qubes-portfwd/")]


def forward_values(running: RunningService, qube: str) -> str:
    """Every `portfwd.<id>` feature value of `qube`, joined."""
    client = running.client()
    values = []
    for name in client.list_features(qube):
        if not name.startswith("portfwd."):
            continue
        try:
            values.append(client.get_feature(qube, name))
        except QubesdError as err:  # removed by the service between the list and the read
            if err.exc_type != "QubesFeatureNotFoundError":
                raise
    return " ".join(values)


def removed_hops(agent: StandInAgent) -> list[str]:
    return [q for q, key in agent.removed if key.startswith("/qubes-portfwd/")]


Slow = tuple[RunningService, StandInAgent]


def test_expired_forward_leaves_every_hop_outer_first_and_its_feature(slow: Slow) -> None:
    running, agent = slow
    client = running.client()
    expire = int(time.time()) + 2
    client.add_forward("work", f"{WEB} expire={expire}")
    assert all(forward_keys(running, q) for q in HOPS)
    assert str(expire) in forward_values(running, "work")

    wait_until(lambda: time.time() >= expire, 5.0)
    wait_until(lambda: removed_hops(agent) == HOPS, DEADLINE)
    wait_until(lambda: client.forwards() == [], DEADLINE)  # the document after that publish
    assert client.firewall_get("work") == ["action=accept"]
    # The feature goes right after the removal is published (kernels first).
    wait_until(lambda: str(expire) not in forward_values(running, "work"), DEADLINE)


def test_a_sooner_expiry_added_later_still_wakes_the_service_in_time(slow: Slow) -> None:
    running, _ = slow
    client = running.client()
    late = int(time.time()) + 60
    client.add_forward("work", f"{WEB} expire={late}")
    soon = int(time.time()) + 2
    client.add_forward("personal", f"{WEB.replace('80', '81')} expire={soon}")
    wait_until(lambda: time.time() >= soon, 5.0)
    # The target is unpublished last.
    wait_until(lambda: forward_keys(running, "personal") == [], DEADLINE)
    assert len(forward_keys(running, "sys-net")) == 1
    assert len(forward_keys(running, "work")) == 1
    wait_until(lambda: [f.target for f in client.forwards()] == ["work"], DEADLINE)


def test_expired_outbound_rules_are_dropped_and_unpublished_too(slow: Slow) -> None:
    running, _ = slow
    client = running.client()
    expire = int(time.time()) + 2
    client.firewall_set("work", [f"action=drop proto=tcp dstports=25 expire={expire}"])

    def work_firewall() -> str:
        entries = running.store("sys-firewall").read()[1]
        return " ".join(v for k, v in entries.items() if k.startswith("/qubes-firewall/10.137"))

    assert "dstports=25" in work_firewall()
    wait_until(lambda: time.time() >= expire, 5.0)
    wait_until(lambda: "dstports=25" not in work_firewall(), DEADLINE)
    assert client.firewall_get("work") == []


def test_until_reboot_survives_a_restart_and_goes_with_a_new_boot_id(tmp_path: Path) -> None:
    running = started(tmp_path, interval=0.3)
    agent = applying(running).__enter__()
    try:
        client = running.client()
        client.add_forward("work", f"{WEB} expire=boot")
        assert "boot:" in forward_values(running, "work")
        running.stop()
        running.start()
        client = running.client()
        assert len(client.forwards()) == 1
        assert forward_keys(running, "sys-net")

        simulate_reboot(running.boot_id_file, "11111111-2222-3333-4444-555555555555")
        wait_until(lambda: "boot:" not in forward_values(running, "work"), 5.0)
        wait_until(lambda: not any(forward_keys(running, q) for q in HOPS), 5.0)
        wait_until(lambda: client.forwards() == [], 5.0)
        assert client.firewall_get("work") == ["action=accept"]
    finally:
        agent.__exit__(None, None, None)
        running.stop()
