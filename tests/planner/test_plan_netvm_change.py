"""Netvm changes in the middle of a path, and rebinding a forward into a port someone holds."""

from dataclasses import replace

from planner_lab import BOOT, NOW, forward_keys, lab_topology, rules

from qubes_portfwd.model.rule import ForwardRule, Rule, forward_id
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.planner import ForwardState, conflicts_for, plan

WEB = "action=forward forwardtype=external proto=tcp srcports=80 srchost=0.0.0.0/0"


def untunnelled() -> Topology:
    """The lab with sys-vpn an ordinary network qube: vpn-work's path has a middle hop."""
    topology = lab_topology()
    return topology.replace_qube(topology["sys-vpn"].with_changes(features={}))


def with_netvm(topology: Topology, qube: str, netvm: str) -> Topology:
    return topology.replace_qube(topology[qube].with_changes(netvm=netvm))


def rebound(rule: Rule, via: tuple[str, ...]) -> ForwardRule:
    assert isinstance(rule, ForwardRule)
    return replace(rule, via=via, follow=False)


def test_middle_netvm_change_deactivates_pinned_and_moves_following_forwards() -> None:
    topology = untunnelled()
    listed = {
        "vpn-work": rules(
            WEB + " via=sys-vpn,sys-firewall,sys-net",
            WEB.replace("80", "81") + " follow=yes",
        )
    }
    before = plan(listed, topology, NOW, BOOT)
    assert [f.path for f in before.forwards] == [
        ("sys-net", "sys-firewall", "sys-vpn", "vpn-work")
    ] * 2
    assert all(f.active for f in before.forwards)

    after = plan(listed, with_netvm(topology, "sys-vpn", "sys-net"), NOW, BOOT)
    pinned, following = after.forwards
    assert pinned.state == ForwardState.INACTIVE
    assert pinned.reason is not None and "now sys-vpn,sys-net" in pinned.reason
    assert following.active and following.path == ("sys-net", "sys-vpn", "vpn-work")
    assert forward_keys(after.entries["sys-firewall"]) == []
    assert forward_keys(after.entries["sys-net"]) == [following.hops[0].key]


def test_rebinding_into_a_port_an_active_forward_holds_is_refused_naming_it() -> None:
    topology = lab_topology()
    pinned = rules(WEB + " via=sys-vpn")[0]  # work was moved away from sys-vpn
    existing: dict[str, list[Rule]] = {"work": [pinned], "personal": rules(WEB)}
    current = plan(existing, topology, NOW, BOOT)
    (stale,) = current.of_target("work")
    (holder,) = current.of_target("personal")
    assert stale.state == ForwardState.INACTIVE and holder.active
    older_first = {stale.forward_id: 0, holder.forward_id: 1}

    found = conflicts_for(
        "work",
        [rebound(pinned, ("sys-firewall", "sys-net"))],
        existing,
        topology,
        NOW,
        BOOT,
        older_first,
    )
    assert len(found) == 1
    assert f"taken by forward {holder.forward_id} of personal" in found[0]


def test_rebinding_onto_free_ports_or_rebinding_an_active_forward_is_accepted() -> None:
    topology = lab_topology()
    pinned = rules(WEB + " via=sys-vpn")[0]
    free = {"work": [pinned], "personal": rules(WEB.replace("80", "81"))}
    new_path = ("sys-firewall", "sys-net")
    assert conflicts_for("work", [rebound(pinned, new_path)], free, topology, NOW, BOOT) == []

    # An active forward pinned where it already runs keeps its rank, and its loser stays one.
    active = rules(WEB + " follow=yes")[0]
    loser = rules(WEB)[0]
    assert isinstance(active, ForwardRule) and isinstance(loser, ForwardRule)
    held: dict[str, list[Rule]] = {"work": [active], "personal": [loser]}
    ranks = {forward_id("work", active): 0, forward_id("personal", loser): 1}
    (lost,) = plan(held, topology, NOW, BOOT, ranks).of_target("personal")
    assert lost.state == ForwardState.CONFLICT
    found = conflicts_for("work", [rebound(active, new_path)], held, topology, NOW, BOOT, ranks)
    assert found == []
