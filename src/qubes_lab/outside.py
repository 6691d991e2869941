"""The world outside the emulated Qubes host: the LAN, an internet server, a VPN provider.

    lan (router, LAN clients, DNS) --lan0/eth0-- sys-net (the edge's physical interface)
      |--inet0/eth0-- server    (the "internet")
      `--prov0/eth0-- provider  (VPN endpoint; WireGuard peers on wg0)

Pure: addresses and namespace setups as values; the builder applies them.
"""

import ipaddress
from dataclasses import dataclass

from .layout import UPLINK_GROUP, UPLINK_IF, NamespaceSetup, Veth, netns_name, router_sysctls
from .topology_file import LAN, OUTSIDE_HOSTS, PROVIDER, SERVER, LabSpec

__all__ = ["LAN", "OUTSIDE_HOSTS", "PROVIDER", "SERVER"]
TUNNEL_PORT = 51820
# Qubes' address ranges, routed by a hostile LAN toward the host: isolation must still hold.
QUBES_RANGES4 = ("10.137.0.0/16", "10.138.0.0/16")
QUBES_RANGE6 = "fd09:24ef:4179::/48"

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


@dataclass(frozen=True)
class OutsideAddresses:
    """Where every outside host is; tests connect from and to these."""

    lan_router4: IPv4
    lan_router6: IPv6
    lan_clients4: tuple[IPv4, ...]
    lan_clients6: tuple[IPv6, ...]
    lan_dns4: IPv4
    edge_lan4: IPv4
    edge_lan6: IPv6
    lan_prefix4: int
    lan_prefix6: int
    internet_router4: IPv4
    internet_router6: IPv6
    server4: IPv4
    server6: IPv6
    internet_prefix4: int
    internet_prefix6: int
    provider_router4: IPv4
    provider_public4: IPv4
    provider_prefix4: int
    provider_tunnel4: IPv4
    tunnel_prefix4: int
    tunnel_qubes4: tuple[tuple[str, IPv4], ...]
    domain: str

    @property
    def server_name(self) -> str:
        return f"server.{self.domain}"

    def tunnel_address(self, qube: str) -> IPv4:
        return dict(self.tunnel_qubes4)[qube]

    def dns_records(self) -> dict[str, tuple[IPv4 | IPv6, ...]]:
        """Names the lab's DNS responders and hosts files know."""
        return {
            self.server_name: (self.server4, self.server6),
            f"provider.{self.domain}": (self.provider_public4,),
            f"lan.{self.domain}": (self.lan_router4, self.lan_router6),
        }


def outside_addresses(spec: LabSpec) -> OutsideAddresses:
    o = spec.outside
    # Host numbers chosen to read well: .1 routers, .2 the edge, .10/.11 clients, .53 DNS.
    return OutsideAddresses(
        lan_router4=o.lan4[1],
        lan_router6=o.lan6[1],
        lan_clients4=(o.lan4[10], o.lan4[11]),
        lan_clients6=(o.lan6[0x10], o.lan6[0x11]),
        lan_dns4=o.lan4[53],
        edge_lan4=o.lan4[2],
        edge_lan6=o.lan6[2],
        lan_prefix4=o.lan4.prefixlen,
        lan_prefix6=o.lan6.prefixlen,
        internet_router4=o.internet4[1],
        internet_router6=o.internet6[1],
        server4=o.internet4[80],
        server6=o.internet6[0x80],
        internet_prefix4=o.internet4.prefixlen,
        internet_prefix6=o.internet6.prefixlen,
        provider_router4=o.provider4[1],
        provider_public4=o.provider4[2],
        provider_prefix4=o.provider4.prefixlen,
        provider_tunnel4=o.tunnel4[1],
        tunnel_prefix4=o.tunnel4.prefixlen,
        tunnel_qubes4=tuple(
            (qube.name, o.tunnel4[2 + index]) for index, qube in enumerate(spec.tunnel_qubes)
        ),
        domain=o.domain,
    )


def hosts_file(addresses: OutsideAddresses, own_name: str) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost", f"127.0.1.1\t{own_name}"]
    for name, records in addresses.dns_records().items():
        lines += [f"{record}\t{name}" for record in records]
    return "\n".join(lines) + "\n"


def outside_veths(lab: str, spec: LabSpec) -> list[Veth]:
    lan = netns_name(lab, LAN)
    return [
        Veth(lan, "lan0", "02:00:00:00:01:01", netns_name(lab, spec.edge.name), UPLINK_IF, ""),
        Veth(lan, "inet0", "02:00:00:00:02:01", netns_name(lab, SERVER), "eth0", ""),
        Veth(lan, "prov0", "02:00:00:00:03:01", netns_name(lab, PROVIDER), "eth0", ""),
    ]


def edge_uplink_commands(a: OutsideAddresses, ipv6: bool) -> list[str]:
    """The edge's physical interface: a LAN address and the LAN router as default gateway."""
    commands = [
        f"link set {UPLINK_IF} group {UPLINK_GROUP} up",
        f"addr add {a.edge_lan4}/{a.lan_prefix4} dev {UPLINK_IF}",
        f"route add default via {a.lan_router4} dev {UPLINK_IF}",
    ]
    if ipv6:
        commands += [
            f"addr add {a.edge_lan6}/{a.lan_prefix6} dev {UPLINK_IF} nodad",
            f"route add default via {a.lan_router6} dev {UPLINK_IF}",
        ]
    return commands


def _lan_setup(lab: str, a: OutsideAddresses) -> NamespaceSetup:
    commands = ["link set lan0 up", "link set inet0 up", "link set prov0 up"]
    for address4 in (a.lan_router4, *a.lan_clients4, a.lan_dns4):
        commands.append(f"addr add {address4}/{a.lan_prefix4} dev lan0")
    for address6 in (a.lan_router6, *a.lan_clients6):
        commands.append(f"addr add {address6}/{a.lan_prefix6} dev lan0 nodad")
    commands += [
        f"addr add {a.internet_router4}/{a.internet_prefix4} dev inet0",
        f"addr add {a.internet_router6}/{a.internet_prefix6} dev inet0 nodad",
        f"addr add {a.provider_router4}/{a.provider_prefix4} dev prov0",
    ]
    commands += [f"route add {net} via {a.edge_lan4} dev lan0" for net in QUBES_RANGES4]
    commands.append(f"route add {QUBES_RANGE6} via {a.edge_lan6} dev lan0")
    return NamespaceSetup(
        netns_name(lab, LAN),
        tuple(commands),
        router_sysctls(["lan0", "inet0", "prov0"], ipv6=True),
        {"hosts": hosts_file(a, LAN), "resolv.conf": f"nameserver {a.lan_dns4}\n"},
    )


def _server_setup(lab: str, a: OutsideAddresses) -> NamespaceSetup:
    commands = (
        "link set eth0 up",
        f"addr add {a.server4}/{a.internet_prefix4} dev eth0",
        f"addr add {a.server6}/{a.internet_prefix6} dev eth0 nodad",
        f"route add default via {a.internet_router4} dev eth0",
        f"route add default via {a.internet_router6} dev eth0",
    )
    return NamespaceSetup(
        netns_name(lab, SERVER),
        commands,
        {},
        {"hosts": hosts_file(a, SERVER), "resolv.conf": f"nameserver {a.lan_dns4}\n"},
    )


def _provider_setup(lab: str, a: OutsideAddresses) -> NamespaceSetup:
    commands = (
        "link set eth0 up",
        f"addr add {a.provider_public4}/{a.provider_prefix4} dev eth0",
        f"route add default via {a.provider_router4} dev eth0",
    )
    return NamespaceSetup(
        netns_name(lab, PROVIDER),
        commands,
        router_sysctls(["eth0"], ipv6=False),
        {"hosts": hosts_file(a, PROVIDER), "resolv.conf": f"nameserver {a.provider_tunnel4}\n"},
    )


def provider_nat_ruleset(a: OutsideAddresses) -> str:
    """The provider masquerades its tunnel clients to the internet, as a VPN provider does."""
    tunnel = ipaddress.IPv4Network(f"{a.provider_tunnel4}/{a.tunnel_prefix4}", strict=False)
    return (
        "table ip qlab-provider {\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "eth0" ip saddr {tunnel} masquerade\n'
        "  }\n"
        "}\n"
    )


def outside_setups(lab: str, a: OutsideAddresses) -> list[NamespaceSetup]:
    return [_lan_setup(lab, a), _server_setup(lab, a), _provider_setup(lab, a)]
