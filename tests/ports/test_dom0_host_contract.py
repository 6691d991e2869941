"""Contract of the dom0 host port, run against every adapter (the lab's qubesd state now;
issue 16 adds the extension's view of a real core-admin app)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from qubes_lab.qubesd.state import HostState
from qubes_portfwd.model.forward_feature import feature_name
from qubes_portfwd.model.rule import Action, FilterRule, ForwardRule, forward_id
from qubes_portfwd.model.rule_text import format_rule, parse_rule
from qubes_portfwd.model.topology import Qube, Topology
from qubes_portfwd.ports.dom0_host import Dom0Host

BOOT = "b00710d0-0000-4000-8000-000000000001"
NOW = 1_000_000.0


def topology() -> Topology:
    return Topology.of(
        Qube("sys-net", 2, provides_network=True),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True),
        Qube("work", 6, netvm="sys-firewall"),
    )


def forward(port: int) -> ForwardRule:
    rule = parse_rule(
        f"action=forward forwardtype=external proto=tcp srcports={port} dstports=8080 "
        "srchost=192.0.2.0/24 via=sys-firewall,sys-net"
    )
    assert isinstance(rule, ForwardRule)
    return rule


def lab_host(state_dir: Path) -> Dom0Host:
    return HostState.open(state_dir, topology())


ADAPTERS: dict[str, Callable[[Path], Dom0Host]] = {"lab": lab_host}


@pytest.fixture(params=sorted(ADAPTERS))
def open_host(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Dom0Host]:
    return lambda: ADAPTERS[request.param](tmp_path / "state")


def test_forwards_are_features_of_their_target(open_host: Callable[[], Dom0Host]) -> None:
    host = open_host()
    drop = FilterRule(Action.DROP, comment="kept")

    host.commit_rules("work", [drop, forward(80)], NOW, BOOT)

    fid = forward_id("work", forward(80))
    assert host.topology["work"].features[feature_name(fid)] == format_rule(forward(80))
    assert host.rules_of("work") == (drop, forward(80))
    assert host.rules["work"] == host.rules_of("work")


def test_a_commit_survives_reopening(open_host: Callable[[], Dom0Host]) -> None:
    open_host().commit_rules("work", [FilterRule(Action.ACCEPT), forward(80)], NOW, BOOT)

    again = open_host()

    assert again.rules_of("work") == (FilterRule(Action.ACCEPT), forward(80))


def test_newer_forwards_rank_after_older_ones(open_host: Callable[[], Dom0Host]) -> None:
    host = open_host()
    host.commit_rules("work", [forward(80)], NOW, BOOT)
    host.commit_rules("work", [forward(80), forward(81)], NOW, BOOT)

    older, newer = forward_id("work", forward(80)), forward_id("work", forward(81))
    assert host.order[older] < host.order[newer]


def test_removing_a_forward_removes_its_feature_and_rank(
    open_host: Callable[[], Dom0Host],
) -> None:
    host = open_host()
    host.commit_rules("work", [forward(80)], NOW, BOOT)
    fid = forward_id("work", forward(80))

    host.commit_rules("work", [FilterRule(Action.ACCEPT)], NOW, BOOT)

    assert feature_name(fid) not in host.topology["work"].features
    assert fid not in host.order


def test_a_topology_change_is_stored(open_host: Callable[[], Dom0Host]) -> None:
    host = open_host()
    moved = host.topology.replace_qube(host.topology["work"].with_changes(netvm="sys-net"))

    host.commit_topology(moved, {"work": frozenset({"netvm"})})

    again = open_host()
    assert again.topology["work"].netvm == "sys-net"
    assert again.explicit["work"] == frozenset({"netvm"})
