"""What a live netvm change does to a running qube, as values: Qubes' detach and re-attach.

On Qubes, setting a running qube's netvm detaches its vif from the old netvm and attaches a
new one in the new netvm: the qube keeps its domain, processes and address; the new netvm's
`vif-route-qubes` adds the route, the neighbour and the anti-spoofing entries; the qube's
gateway QubesDB keys change. Only the qube's uplink moves: its own downstream links and a
tunnel qube's tunnel stay as they are.

The plan is pure (`running` is the topology the namespaces run now); `apply_network`
carries out its namespace part.
"""

import dataclasses
from dataclasses import dataclass

from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import Qube

from . import netns
from .layout import UPLINK_IF, NamespaceSetup, Veth, netns_name
from .outside import OutsideAddresses
from .qubesdb_keys import static_keys
from .restart import antispoof_refresh, base_params, netvm_side, served_side, uplink_veth
from .topology_file import LabSpec


@dataclass(frozen=True)
class ReattachPlan:
    """Everything moving one qube's uplink does, in the order `apply_network` applies it."""

    qube: Qube  # as it runs afterwards
    netns: str
    detach: bool  # the qube has an uplink to a netvm now: it goes, its vif with it
    veth: Veth | None  # the new uplink; None when the new netvm is none
    setups: tuple[NamespaceSetup, ...]
    antispoof: tuple[tuple[str, str], ...]  # (netvm namespace, nft script) to refill its sets
    own_ipv6_rules: str  # nft script swapping the qube's IPv6 base tables ("" if they stay)
    static: dict[str, str]  # the qube's static QubesDB keys afterwards

    @property
    def changes_anything(self) -> bool:
        return self.detach or self.veth is not None


def plan_reattach(
    lab: str, running: LabSpec, name: str, netvm: str | None, a: OutsideAddresses
) -> tuple[ReattachPlan, LabSpec]:
    """Moving running qube `name` behind `netvm` (None: no network), and the new running spec.

    A no-op plan when it already runs behind `netvm`.
    """
    old = running.topology[name]
    if old.netvm is None and old.provides_network:
        raise ValidationError("netvm", f"{name} is the lab's edge: its uplink is the LAN")
    if netvm is not None and (
        netvm not in running.topology or not running.topology[netvm].provides_network
    ):
        raise ValidationError("netvm", f"expected a running network qube, not {netvm!r}")
    moved = dataclasses.replace(old, netvm=netvm)
    spec = dataclasses.replace(running, topology=running.topology.replace_qube(moved))
    qube_netns = netns_name(lab, name)
    if old.netvm == netvm:
        unchanged = ReattachPlan(moved, qube_netns, False, None, (), (), "", {})
        return unchanged, running
    veth = None
    setups: tuple[NamespaceSetup, ...] = ()
    if netvm is not None:
        new_netvm = spec.topology[netvm]
        veth = uplink_veth(lab, moved, new_netvm)
        setups = (served_side(lab, moved, new_netvm, a), netvm_side(lab, new_netvm, moved))
    plan = ReattachPlan(
        qube=moved,
        netns=qube_netns,
        detach=old.netvm is not None,
        veth=veth,
        setups=setups,
        antispoof=antispoof_refresh(lab, spec, (old.netvm, netvm), a),
        own_ipv6_rules=ipv6_base_swap(base_params(running, old, a), base_params(spec, moved, a)),
        static=static_keys(spec.topology, moved),
    )
    return plan, spec


_IPV6_BASE_TABLES = ("table ip6 qubes {", "table ip6 qbs-filter {")


def ipv6_base_swap(before: BaseParams, after: BaseParams) -> str:
    """The qube's IPv6 base tables as a restart would load them, when its uplink gains or
    loses IPv6; "" when they stay. Its IPv4 tables (and the agent's rules there) are kept."""
    if before.ipv6 == after.ipv6:
        return ""
    lines = []
    for header in _IPV6_BASE_TABLES:
        name = header.removesuffix(" {")
        lines += [f"add {name}", f"delete {name}"]  # "add" first: delete needs it to exist
    inside = False
    for line in base_ruleset(after).splitlines():
        inside = inside or line in _IPV6_BASE_TABLES
        if inside:
            lines.append(line)
            inside = line != "}"
    return "".join(f"{line}\n" for line in lines)


def apply_network(plan: ReattachPlan) -> None:
    """Move the uplink; the qube's namespace, processes and other links stay."""
    if plan.detach and UPLINK_IF in netns.link_names(plan.netns):
        # Deleting one end of a veth deletes its peer: the vif, its route and neighbour go.
        netns.ip_batch(plan.netns, [f"link del {UPLINK_IF}"])
    if plan.veth is not None:
        netns.ip_batch(plan.veth.netns_a, [plan.veth.add_command()])
    for setup in plan.setups:
        netns.ip_batch(setup.netns, setup.commands)
        netns.sysctls(setup.netns, setup.sysctls)
    if plan.own_ipv6_rules:
        netns.nft_load(plan.netns, plan.own_ipv6_rules)
    for netvm_netns, script in plan.antispoof:
        if script:
            netns.nft_load(netvm_netns, script)
