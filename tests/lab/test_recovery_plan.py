"""What a repair redoes, as values: dead processes in a safe order, qubes rebuilt alone when
their neighbours stand, the whole host otherwise; and how `up` chooses what to build on
dom0's state."""

import json
from pathlib import Path

import pytest

from qubes_lab import dom0_state, recovery
from qubes_lab.layout import netns_name
from qubes_lab.outside import OUTSIDE_HOSTS
from qubes_lab.processes import TrackedProcess, option
from qubes_lab.qubesd.topology_json import topology_to_json
from qubes_lab.state import LabState
from qubes_lab.status import collect_status
from qubes_lab.topology_file import default_topology_text, load_lab_spec
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import Topology

LAB = "t"
SPEC = load_lab_spec()


def ns(host: str) -> str:
    return netns_name(LAB, host)


def process(role: str, host: str = "", pid: int = 100) -> TrackedProcess:
    return TrackedProcess(role, ns(host) if host else "", pid, 1, "log", ("prog", "--lease", "30"))


PROCESSES = (
    process("agent:sys-net", "sys-net", 101),
    process("agent:work", "work", 102),
    process("agent:personal", "personal", 103),
    process(f"wireguard-go:{ns('provider')}", "provider", 104),
    process(f"wireguard-go:{ns('sys-vpn')}", "sys-vpn", 105),
    process("dns:lan", "lan", 106),
    process("natd:sys-firewall", "sys-firewall", 107),
    process("admind", "", 108),
    process("tunnel-keeper:sys-vpn", "sys-vpn", 109),
)
NAMESPACES = tuple(ns(h) for h in [*(q.name for q in SPEC.qubes_by_qid()), *OUTSIDE_HOSTS])
STATE = LabState(LAB, "text", NAMESPACES, PROCESSES, complete=True)


def plan(
    gone: tuple[str, ...] = (), dead: tuple[str, ...] = (), current: LabState = STATE
) -> recovery.RepairPlan:
    present = [n for n in current.namespaces if n not in {ns(h) for h in gone}]
    running = [p for p in current.processes if p.role not in dead]
    return recovery.plan_repair(current, SPEC, present, running)


def roles(processes: tuple[TrackedProcess, ...]) -> list[str]:
    return [p.role for p in processes]


def test_a_healthy_lab_needs_nothing() -> None:
    assert plan().nothing


def test_dead_processes_restart_in_dependency_order() -> None:
    got = plan(dead=("natd:sys-firewall", "admind", "agent:work", "dns:lan"))
    assert not got.rebuild and not got.qubes
    assert roles(got.processes) == ["dns:lan", "agent:work", "admind", "natd:sys-firewall"]


def test_the_tunnel_is_restarted_once_whichever_ends_died() -> None:
    ends = (f"wireguard-go:{ns('provider')}", f"wireguard-go:{ns('sys-vpn')}")
    assert roles(plan(dead=ends).processes) == [ends[0]]


def test_a_qube_whose_namespace_is_gone_is_rebuilt_and_its_orphans_stopped() -> None:
    got = plan(gone=("personal",))
    assert got.qubes == ("personal",) and not got.rebuild
    assert roles(got.orphans) == ["agent:personal"]  # it keeps the old namespace alive
    assert got.processes == ()  # the rebuild starts its agent


@pytest.mark.parametrize(
    ("gone", "why"),
    [
        (("lan",), "lan"),  # an outside host
        (("sys-net",), "sys-net"),  # the edge: its LAN link is gone with it
        (("sys-vpn",), "sys-vpn"),  # a tunnel qube
        (("sys-firewall", "work"), "are gone"),  # neighbours: one cannot link to the other
    ],
)
def test_the_host_is_rebuilt_when_a_qube_alone_cannot_be(gone: tuple[str, ...], why: str) -> None:
    got = plan(gone=gone)
    assert why in got.rebuild
    # What `up` does not start by itself is started again afterwards, alive or not.
    assert roles(got.processes) == ["tunnel-keeper:sys-vpn"]


def test_an_up_that_did_not_finish_is_rebuilt() -> None:
    incomplete = LabState(LAB, "text", NAMESPACES, PROCESSES, complete=False)
    assert "did not finish" in plan(current=incomplete).rebuild


@pytest.mark.parametrize(
    ("words", "role"),
    [
        (["admind"], "admind"),
        (["agent", "work"], "agent:work"),
        (["natd:sys-firewall"], "natd:sys-firewall"),
        (["wireguard-go:qlab-x-sys-vpn"], "wireguard-go:qlab-x-sys-vpn"),
    ],
)
def test_restart_names_a_role_in_one_or_two_words(words: list[str], role: str) -> None:
    assert recovery.role_named(words) == role


@pytest.mark.parametrize(
    "words", [[], ["agent:work", "x"], ["a", "b", "c"], ["agent", "../work"], ["Agent"], ["a b"]]
)
def test_restart_refuses_what_is_no_role(words: list[str]) -> None:
    with pytest.raises(ValidationError, match="process"):
        recovery.role_named(words)


def test_a_process_record_keeps_its_options() -> None:
    recorded = process("provider-natpmp", "provider")
    again = TrackedProcess.from_json(json.loads(json.dumps(recorded.to_json())))
    assert again == recorded and option(again, "--lease") == "30"
    assert option(again, "--lifetime") is None
    old = {k: v for k, v in recorded.to_json().items() if k != "argv"}  # before argv was kept
    assert TrackedProcess.from_json(old).argv == ()


def test_up_builds_what_the_lab_was_made_from() -> None:
    assert dom0_state.topology_text("x", None, None) == default_topology_text()
    assert dom0_state.topology_text("x", None, "kept") == "kept"
    assert dom0_state.topology_text("x", "kept", "kept") == "kept"
    assert dom0_state.topology_text("x", "given", None) == "given"
    with pytest.raises(ValidationError, match=r"topology: .*down --purge"):
        dom0_state.topology_text("x", "other", "kept")


def test_qubes_start_with_the_properties_dom0_has(tmp_path: Path) -> None:
    assert dom0_state.read_current(tmp_path) is None
    moved = SPEC.topology.replace_qube(SPEC.topology["work"].with_changes(netvm="sys-vpn"))
    document = {"current": topology_to_json(moved), "seed": topology_to_json(SPEC.topology)}
    (tmp_path / "topology.json").write_text(json.dumps(document))
    current = dom0_state.read_current(tmp_path)
    assert current is not None
    differing = dom0_state.differences(SPEC.topology, current)
    assert [(q["name"], q["netvm"]) for q in differing] == [("work", "sys-vpn")]
    assert dom0_state.differences(SPEC.topology, SPEC.topology) == ()


def test_dom0_state_of_other_qubes_or_unreadable_is_refused(tmp_path: Path) -> None:
    fewer = Topology({n: q for n, q in SPEC.topology.qubes.items() if n != "personal"})
    with pytest.raises(ValidationError, match="dom0 state: its qubes"):
        dom0_state.differences(SPEC.topology, fewer)
    (tmp_path / "topology.json").write_text("{not json")
    with pytest.raises(ValidationError, match=r"dom0 state: .*topology\.json"):
        dom0_state.read_current(tmp_path)


def test_status_of_a_lab_down_with_dom0_state_says_so() -> None:
    shown = collect_status("x", None, {}, dom0_kept=True).format()
    assert "down, dom0's state kept" in shown and "--purge" in shown
    assert collect_status("x", None, {}).format() == "lab x: down\n"
