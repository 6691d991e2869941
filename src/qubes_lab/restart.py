"""What restarting one qube rebuilds, as values: Qubes' shutdown and start, for the lab.

A qube's shutdown destroys its domain: its namespace, the vif its netvm had for it and the
vifs of the qubes it serves. At start Qubes makes its uplink and, as it reattaches the
qubes connected to it, their links again; `vif-route-qubes` in the netvm adds the qube's
(possibly new) address to the anti-spoofing sets. The edge's physical interface is a
device: it survives the restart and is handed to the new domain.

The plan is pure (`running` is the topology the namespaces were built from);
`apply_network` carries out its namespace part.
"""

import contextlib
import dataclasses
import os
import signal
from dataclasses import dataclass

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_portfwd.model.topology import DNS_SERVERS4, Qube

from . import netns, processes
from .layout import (
    NETVM_MAC,
    UPLINK_IF,
    NamespaceSetup,
    Veth,
    has_ipv6_link,
    netns_name,
    qube_mac,
    qube_setup,
    router_sysctls,
    uplink_commands,
    vif_commands,
    vif_name,
    vif_sysctls,
)
from .outside import OutsideAddresses, edge_uplink_commands
from .qubesdb_keys import static_keys
from .topology_file import LabSpec

STOP_TIMEOUT = 20.0  # SIGKILLed processes end at once; a loaded 2-CPU host has taken over 5 s


@dataclass(frozen=True)
class RestartPlan:
    """Everything one qube's restart does, in the order the builder applies it."""

    qube: Qube
    netns: str
    keeps_uplink: bool  # the edge: its LAN interface is kept aside while its domain is gone
    veths: tuple[Veth, ...]
    setups: tuple[NamespaceSetup, ...]
    base_params: BaseParams
    antispoof: tuple[tuple[str, str], ...]  # (netvm namespace, nft script) to refresh its sets
    static: dict[str, dict[str, str]]  # qube -> its static QubesDB keys


def full_setup(lab: str, spec: LabSpec, qube: Qube, a: OutsideAddresses) -> NamespaceSetup:
    """A qube's whole namespace setup, with the edge's LAN side and a tunnel qube's DNS."""
    setup = qube_setup(lab, spec.topology, qube)
    if qube.netvm is None and qube.provides_network:
        return dataclasses.replace(
            setup,
            commands=setup.commands + tuple(edge_uplink_commands(a, qube.ipv6_enabled)),
            etc_files={**setup.etc_files, "resolv.conf": f"nameserver {a.lan_dns4}\n"},
        )
    if qube.is_tunnel:
        resolv = f"nameserver {a.provider_tunnel4}\n"
        return dataclasses.replace(setup, etc_files={**setup.etc_files, "resolv.conf": resolv})
    return setup


def base_params(spec: LabSpec, qube: Qube, a: OutsideAddresses) -> BaseParams:
    """What Qubes' base rules of `qube` are made from, in the running topology."""
    topology = spec.topology
    downstream = tuple(
        Downstream(vif_name(d), d.address4, d.address6 if has_ipv6_link(d, qube) else None)
        for d in topology.downstream(qube.name)
    )
    upstream_dns: tuple[object, ...]
    if qube.netvm is None and qube.provides_network:
        upstream_dns = (a.lan_dns4,)
    elif qube.is_tunnel:
        upstream_dns = (a.provider_tunnel4,)
    else:
        upstream_dns = DNS_SERVERS4
    ipv6 = qube.ipv6_enabled if qube.netvm is None else has_ipv6_link(qube, topology[qube.netvm])
    return BaseParams(
        provides_network=qube.provides_network,
        ipv6=ipv6,
        downstream=downstream,
        upstream_dns=upstream_dns,  # type: ignore[arg-type]
    )


def antispoof_script(params: BaseParams) -> str:
    """Refill the `downstream` and `allowed` sets of Qubes' base tables, as vif-route-qubes does."""
    lines = []
    for family, ip in ((4, "ip"), (6, "ip6")):
        if family == 6 and not params.ipv6:
            continue
        pairs = [
            (d.ifname, d.ipv4 if family == 4 else d.ipv6)
            for d in params.downstream
            if (d.ipv4 if family == 4 else d.ipv6) is not None
        ]
        lines += [f"flush set {ip} qubes downstream", f"flush set {ip} qubes allowed"]
        if pairs:
            addresses = ", ".join(str(address) for _, address in pairs)
            allowed = ", ".join(f'"{ifname}" . {address}' for ifname, address in pairs)
            lines += [
                f"add element {ip} qubes downstream {{ {addresses} }}",
                f"add element {ip} qubes allowed {{ {allowed} }}",
            ]
    return "".join(f"{line}\n" for line in lines)


def antispoof_refresh(
    lab: str, spec: LabSpec, netvms: tuple[str | None, ...], a: OutsideAddresses
) -> tuple[tuple[str, str], ...]:
    """(namespace, script) refilling the anti-spoofing sets of each netvm as `spec` has it."""
    names = sorted({q for q in netvms if q is not None and q in spec.topology})
    return tuple(
        (netns_name(lab, name), antispoof_script(base_params(spec, spec.topology[name], a)))
        for name in names
    )


def uplink_veth(lab: str, qube: Qube, netvm: Qube) -> Veth:
    """The qube's eth0 and its vif in the netvm."""
    return Veth(
        netns_name(lab, qube.name),
        UPLINK_IF,
        qube_mac(qube),
        netns_name(lab, netvm.name),
        vif_name(qube),
        NETVM_MAC,
    )


def plan_restart(
    lab: str, running: LabSpec, restarted: Qube, a: OutsideAddresses
) -> tuple[RestartPlan, LabSpec]:
    """The restart of `restarted` (its properties as dom0 has them now) and the new running spec.

    Only the restarted qube takes its new properties; the others keep what they started with.
    """
    old = running.topology[restarted.name]
    spec = dataclasses.replace(running, topology=running.topology.replace_qube(restarted))
    topology = spec.topology
    veths: list[Veth] = []
    setups = [full_setup(lab, spec, restarted, a)]
    if restarted.netvm is not None:
        netvm = topology[restarted.netvm]
        veths.append(uplink_veth(lab, restarted, netvm))
        setups.append(netvm_side(lab, netvm, restarted))
    for served in topology.downstream(restarted.name):
        veths.append(uplink_veth(lab, served, restarted))
        setups.append(served_side(lab, served, restarted, a))
    antispoof = antispoof_refresh(lab, spec, (old.netvm, restarted.netvm), a)
    edge_address = str(a.edge_lan4) if restarted.name == spec.edge.name else None
    static = {restarted.name: static_keys(topology, restarted, edge_address)}
    for served in topology.downstream(restarted.name):
        static[served.name] = static_keys(topology, served)
    plan = RestartPlan(
        qube=restarted,
        netns=netns_name(lab, restarted.name),
        keeps_uplink=restarted.netvm is None and restarted.provides_network,
        veths=tuple(veths),
        setups=tuple(setups),
        base_params=base_params(spec, restarted, a),
        antispoof=antispoof,
        static=static,
    )
    return plan, spec


def netvm_side(lab: str, netvm: Qube, qube: Qube) -> NamespaceSetup:
    """The netvm's end of a qube's link, as vif-route-qubes sets it up."""
    sysctls = vif_sysctls(netvm, qube)
    sysctls.update(
        {k: v for k, v in router_sysctls([vif_name(qube)], False).items() if vif_name(qube) in k}
    )
    return NamespaceSetup(netns_name(lab, netvm.name), tuple(vif_commands(netvm, qube)), sysctls)


def served_side(lab: str, served: Qube, netvm: Qube, a: OutsideAddresses) -> NamespaceSetup:
    """The qube's end of its uplink: address, gateway, routes (a tunnel keeps its default)."""
    commands = uplink_commands(served, netvm)
    if served.is_tunnel:
        # Its default route is the tunnel's; only the way to the provider uses the uplink.
        commands = [c for c in commands if not c.startswith("route add default")]
        commands.append(f"route add {a.provider_public4}/32 via {netvm.address4} dev eth0 onlink")
    sysctls = {}
    if not has_ipv6_link(served, netvm):
        sysctls[f"net/ipv6/conf/{UPLINK_IF}/disable_ipv6"] = "1"
    if served.provides_network:
        sysctls[f"net/ipv4/conf/{UPLINK_IF}/send_redirects"] = "0"
    return NamespaceSetup(netns_name(lab, served.name), tuple(commands), sysctls)


def stop_everything_in(netns_name_: str) -> None:
    """Kill every process left in the namespace, as a domain's shutdown does.

    A process still inside keeps a deleted namespace, and with it the qube's links, alive.
    """
    for _ in range(3):
        pids = [int(p) for p in netns.run(["ip", "netns", "pids", netns_name_]).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        processes.wait_until(
            lambda: not netns.run(["ip", "netns", "pids", netns_name_]).split(),
            STOP_TIMEOUT,
            f"processes in {netns_name_} to end",
        )


def _old_links_gone(plan: RestartPlan) -> bool:
    return not any(
        (v.netns_a != plan.netns and v.name_a in netns.link_names(v.netns_a))
        or (v.netns_b != plan.netns and v.name_b in netns.link_names(v.netns_b))
        for v in plan.veths
    )


def apply_network(plan: RestartPlan, holder_netns: str) -> None:
    """Destroy and rebuild the qube's namespace and links; `holder_netns` keeps the edge's NIC."""
    if netns.exists(plan.netns):  # else it is already gone (a repair rebuilds it)
        stop_everything_in(plan.netns)
    if plan.keeps_uplink:
        netns.run(["ip", "-n", plan.netns, "link", "set", UPLINK_IF, "netns", holder_netns])
    netns.delete(plan.netns)
    netns.remove_netns_etc(plan.netns)
    netns.add(plan.netns)
    if plan.keeps_uplink:
        netns.run(["ip", "-n", holder_netns, "link", "set", UPLINK_IF, "netns", plan.netns])
    # The kernel tears a deleted namespace down in the background, its veths with it.
    processes.wait_until(lambda: _old_links_gone(plan), STOP_TIMEOUT, f"links of {plan.netns}")
    for veth in plan.veths:
        netns.ip_batch(veth.netns_a, [veth.add_command()])
    for setup in plan.setups:
        if setup.etc_files:
            netns.write_netns_etc(setup.netns, setup.etc_files)
        netns.ip_batch(setup.netns, setup.commands)
        netns.sysctls(setup.netns, setup.sysctls)
    netns.nft_load(plan.netns, base_ruleset(plan.base_params))
    for netvm_netns, script in plan.antispoof:
        if script:
            netns.nft_load(netvm_netns, script)
