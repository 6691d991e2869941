"""Qubes' network layout as values: which veths, addresses, routes, neighbours, sysctls.

Pure: the builder turns these into `ip -batch` input and sysctl writes. The facts follow
Qubes' vif-route-qubes (netvm side) and setup-ip (qube side): /32 addresses, the netvm's own
address on every vif, a host route per downstream qube, a permanent neighbour for the gateway.
"""

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from qubes_portfwd.model.topology import DNS_SERVERS4, Qube, Topology

# Xen's backend vif always has this MAC; qubes pin their gateway to it.
NETVM_MAC = "fe:ff:ff:ff:ff:ff"
UPLINK_IF = "eth0"
UPLINK_GROUP = 1
DOWNSTREAM_GROUP = 2
MAX_DOMID = 32752  # vif-route-qubes: route metric = MAX_DOMID - domid


def netns_name(lab: str, host: str) -> str:
    """Every namespace of lab `lab` is `qlab-<lab>-<host>` (a qube or an outside host)."""
    return f"qlab-{lab}-{host}"


def vif_name(qube: Qube) -> str:
    """The lab gives each qube the domid of its qid, so its vif in the netvm is vif<qid>.0."""
    return f"vif{qube.qid}.0"


def qube_mac(qube: Qube) -> str:
    return f"00:16:3e:5e:6c:{qube.qid & 0xFF:02x}"


@dataclass(frozen=True)
class Veth:
    """A veth pair created from namespace a, its peer placed directly in namespace b."""

    netns_a: str
    name_a: str
    mac_a: str
    netns_b: str
    name_b: str
    mac_b: str

    def add_command(self) -> str:
        """`ip` batch line; an empty MAC lets the kernel pick one."""
        mac_a = f" address {self.mac_a}" if self.mac_a else ""
        mac_b = f" address {self.mac_b}" if self.mac_b else ""
        return (
            f"link add {self.name_a}{mac_a} type veth"
            f" peer name {self.name_b}{mac_b} netns {self.netns_b}"
        )


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class NamespaceSetup:
    """One namespace's configuration, applied after every veth exists."""

    netns: str
    commands: tuple[str, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    etc_files: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sysctls", _frozen(self.sysctls))
        object.__setattr__(self, "etc_files", _frozen(self.etc_files))


def has_ipv6_link(qube: Qube, netvm: Qube) -> bool:
    """IPv6 on a qube's uplink needs the feature on both ends (Qubes checks it with the netvm)."""
    return qube.ipv6_enabled and netvm.ipv6_enabled


def router_sysctls(interfaces: list[str], ipv6: bool) -> dict[str, str]:
    """Forwarding on; no ICMP redirects (hairpinned forwards leave by the interface they came)."""
    settings = {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/conf/all/send_redirects": "0",
        "net/ipv4/conf/default/send_redirects": "0",
    }
    for ifname in interfaces:
        settings[f"net/ipv4/conf/{ifname}/send_redirects"] = "0"
    if ipv6:
        settings["net/ipv6/conf/all/forwarding"] = "1"
    return settings


def qube_veths(lab: str, topology: Topology) -> list[Veth]:
    """One veth per qube with a netvm: eth0 in the qube, vif<qid>.0 in its netvm."""
    return [
        Veth(
            netns_name(lab, q.name),
            UPLINK_IF,
            qube_mac(q),
            netns_name(lab, q.netvm),
            vif_name(q),
            NETVM_MAC,
        )
        for q in sorted(topology.qubes.values(), key=lambda q: q.qid)
        if q.netvm is not None
    ]


def uplink_commands(qube: Qube, netvm: Qube) -> list[str]:
    gateway = netvm.address4
    commands = [
        f"link set {UPLINK_IF} group {UPLINK_GROUP} up",
        f"addr add {qube.address4}/32 dev {UPLINK_IF}",
        f"neigh replace {gateway} lladdr {NETVM_MAC} dev {UPLINK_IF} nud permanent",
        f"route add {gateway}/32 dev {UPLINK_IF} scope link",
        f"route add default via {gateway} dev {UPLINK_IF} onlink",
    ]
    if has_ipv6_link(qube, netvm):
        gateway6 = netvm.address6
        commands += [
            f"addr add {qube.address6}/128 dev {UPLINK_IF} nodad",
            f"neigh replace {gateway6} lladdr {NETVM_MAC} dev {UPLINK_IF} nud permanent",
            f"route add {gateway6}/128 dev {UPLINK_IF}",
            f"route add default via {gateway6} dev {UPLINK_IF} onlink",
        ]
    return commands


def vif_commands(netvm: Qube, downstream: Qube) -> list[str]:
    vif = vif_name(downstream)
    metric = MAX_DOMID - downstream.qid
    mac = qube_mac(downstream)
    # The netvm knows each downstream qube's MAC (Xen gives it); a permanent neighbour also
    # keeps neighbour discovery, whose link-local replies antispoof drops, off the vif.
    commands = [
        f"link set {vif} group {DOWNSTREAM_GROUP} up",
        f"addr add {netvm.address4}/32 dev {vif}",
        f"route add {downstream.address4}/32 dev {vif} metric {metric}",
        f"neigh replace {downstream.address4} lladdr {mac} dev {vif} nud permanent",
    ]
    if has_ipv6_link(downstream, netvm):
        commands += [
            f"addr add {netvm.address6}/128 dev {vif} nodad",
            f"route add {downstream.address6}/128 dev {vif} metric {metric}",
            f"neigh replace {downstream.address6} lladdr {mac} dev {vif} nud permanent",
        ]
    return commands


def vif_sysctls(netvm: Qube, downstream: Qube) -> dict[str, str]:
    vif = vif_name(downstream)
    settings = {f"net/ipv4/conf/{vif}/proxy_arp": "1"}
    if has_ipv6_link(downstream, netvm):
        settings[f"net/ipv6/conf/{vif}/proxy_ndp"] = "1"
    else:
        # Qubes drops all IPv6 on the vif of a qube without an IPv6 address.
        settings[f"net/ipv6/conf/{vif}/disable_ipv6"] = "1"
    return settings


def resolv_conf(servers: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> str:
    return "".join(f"nameserver {server}\n" for server in servers)


def qube_setup(lab: str, topology: Topology, qube: Qube) -> NamespaceSetup:
    """A qube's own side: its uplink eth0 (if it has a netvm) and its vifs (if it serves)."""
    commands: list[str] = []
    sysctls: dict[str, str] = {}
    if qube.netvm is not None:
        netvm = topology[qube.netvm]
        commands += uplink_commands(qube, netvm)
        if not has_ipv6_link(qube, netvm):
            sysctls[f"net/ipv6/conf/{UPLINK_IF}/disable_ipv6"] = "1"
    downstream = topology.downstream(qube.name)
    for served in downstream:
        commands += vif_commands(qube, served)
        sysctls.update(vif_sysctls(qube, served))
    if qube.provides_network:
        vifs = [vif_name(q) for q in downstream]
        sysctls.update(router_sysctls([UPLINK_IF, *vifs], qube.ipv6_enabled))
    etc_files = {"hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{qube.name}\n"}
    if qube.netvm is not None:
        # Qubes lists only the IPv4 virtual DNS servers in a qube's resolv.conf.
        etc_files["resolv.conf"] = resolv_conf(list(DNS_SERVERS4))
    return NamespaceSetup(netns_name(lab, qube.name), tuple(commands), sysctls, etc_files)
