"""Qubes' own base nftables rules for one qube, written from what Qubes ships.

Reproduces the structure of qubes-core-agent-linux: `network/qubes-ipv4.nft`,
`qubes-ipv6.nft` (or `qubes-ipv6-disabled.nft`), `qubes-antispoof.nft` with the sets that
`vif-route-qubes` fills per vif, the `dnat-dns` chain of `qubes-setup-dnat-to-ns`, and the
`qubes-firewall` tables that the firewall agent (`qubesagent/firewall.py`) creates in
network qubes. The lab loads this into each qube's namespace so that a forward meets the
same default-deny as on Qubes. Interface groups: uplink `eth0` is 1, `vif…` are 2.
"""

import ipaddress
from dataclasses import dataclass

from qubes_portfwd.nft.syntax import addr_type, anonymous_set, elements_line, table_family

VIRTUAL_DNS = (ipaddress.IPv4Address("10.139.1.1"), ipaddress.IPv4Address("10.139.1.2"))


@dataclass(frozen=True)
class Downstream:
    """One downstream qube as its netvm sees it: the vif and the qube's addresses."""

    ifname: str
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address | None = None


@dataclass(frozen=True)
class BaseParams:
    """What decides a qube's base rules.

    `upstream_dns` are the resolvers the network qube itself uses; Qubes DNATs the virtual
    DNS addresses to them (cycling when there are fewer), or drops DNS when there are none.
    """

    provides_network: bool
    ipv6: bool = False
    downstream: tuple[Downstream, ...] = ()
    virtual_dns: tuple[ipaddress.IPv4Address, ...] = VIRTUAL_DNS
    upstream_dns: tuple[ipaddress.IPv4Address, ...] = ()


def base_ruleset(params: BaseParams, firewall_tables: bool = True) -> str:
    """The nft script that loads Qubes' base rules into an empty ruleset (`nft -f -`).

    Stable contract for the lab: tables `ip qubes` (+ `ip6 qubes` when `ipv6`, else Qubes'
    `ip6 qbs-filter` that drops IPv6), and in network qubes `ip|ip6 qubes-firewall` with
    no per-source chains yet (every downstream source is dropped until rules arrive).
    """
    lines = _qubes_table(4, params)
    lines += _qubes_table(6, params) if params.ipv6 else _ipv6_disabled()
    if params.provides_network and firewall_tables:
        for family in (4, 6):
            lines += _firewall_table(family, params)
    return "\n".join(lines) + "\n"


def _addresses(params: BaseParams, family: int) -> list[str]:
    found = [d.ipv4 if family == 4 else d.ipv6 for d in params.downstream]
    return [str(a) for a in found if a is not None]


def _allowed(params: BaseParams, family: int) -> list[str]:
    pairs = [(d.ifname, d.ipv4 if family == 4 else d.ipv6) for d in params.downstream]
    return [f'"{ifname}" . {a}' for ifname, a in pairs if a is not None]


def _qubes_table(family: int, params: BaseParams) -> list[str]:
    ip = table_family(family)
    lines = [
        f"table {ip} qubes {{",
        "  set downstream {",
        f"    type {addr_type(family)}",
        *elements_line(_addresses(params, family), "    "),
        "  }",
        "  set allowed {",
        f"    type ifname . {addr_type(family)}",
        *elements_line(_allowed(params, family), "    "),
        "  }",
        "  chain prerouting {",
        "    type filter hook prerouting priority raw; policy accept;",
        "    iifgroup 2 goto antispoof",
        f"    {ip} saddr @downstream counter drop",
        "  }",
        "  chain antispoof {",
        f"    iifname . {ip} saddr @allowed accept",
        "    counter drop",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        "    oifgroup 2 accept",
        "    oif lo accept",
        "    masquerade",
        "  }",
    ]
    lines += _input_v4() if family == 4 else _input_v6()
    lines += [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        # Qubes' ip6 forward chain of some releases lacks this jump; DESIGN.md §1 relies
        # on custom-forward in both families, so it is written for both.
        "    jump custom-forward",
        "    ct state invalid counter drop",
        "    ct state related,established accept",
        "    iifgroup != 2 counter drop",
        "    oifgroup 2 counter drop",
        "  }",
        "  chain custom-input {",
        "  }",
        "  chain custom-forward {",
        "  }",
    ]
    if family == 4 and params.provides_network:
        lines += _dnat_dns(params)
    return [*lines, "}"]


def _input_v4() -> list[str]:
    return [
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    jump custom-input",
        "    ct state invalid counter drop",
        "    iifgroup 2 meta l4proto udp udp dport 68 counter drop",
        "    ct state related,established accept",
        "    iifgroup 2 meta l4proto icmp accept",
        "    iif lo accept",
        "    iifgroup 2 counter reject with icmp type host-prohibited",
        "    counter",
        "  }",
    ]


def _input_v6() -> list[str]:
    return [
        "  chain _icmpv6 {",
        "    meta l4proto != ipv6-icmp counter reject with icmpv6 type admin-prohibited",
        "    icmpv6 type { nd-router-advert, nd-redirect } counter drop",
        "    accept",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    jump custom-input",
        "    ct state invalid counter drop",
        "    ct state related,established accept",
        "    iifgroup 2 goto _icmpv6",
        "    iif lo accept",
        "    meta l4proto udp ip6 saddr fe80::/64 ip6 daddr fe80::/64 udp dport 546 accept",
        "    meta l4proto ipv6-icmp accept",
        "    counter",
        "  }",
    ]


def _dnat_dns(params: BaseParams) -> list[str]:
    rules = []
    upstream = params.upstream_dns
    for index, virtual in enumerate(params.virtual_dns):
        for proto in ("udp", "tcp"):
            match = f"ip daddr {virtual} {proto} dport 53"
            if upstream:
                rules.append(f"    {match} dnat to {upstream[index % len(upstream)]}")
            else:
                rules.append(f"    {match} drop")
    return [
        "  chain dnat-dns {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *rules,
        "  }",
    ]


def _ipv6_disabled() -> list[str]:
    return [
        "table ip6 qbs-filter {",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    iif lo accept",
        "    counter",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    counter",
        "  }",
        "}",
    ]


def _firewall_table(family: int, params: BaseParams) -> list[str]:
    ip = table_family(family)
    connected = _addresses(params, family)
    prerouting = postrouting = []
    if connected:
        prerouting = [f'    iifname != "vif*" {ip} saddr {anonymous_set(connected)} drop']
        postrouting = [f'    oifname != "vif*" {ip} daddr {anonymous_set(connected)} drop']
    return [
        f"table {ip} qubes-firewall {{",
        "  set dns-addr {",
        f"    type {addr_type(family)}",
        "  }",
        "  chain qubes-forward {",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority 0; policy drop;",
        "    ct state established,related accept",
        '    meta iifname != "vif*" accept',
        "    jump qubes-forward",
        "  }",
        "  chain prerouting {",
        "    type filter hook prerouting priority -300; policy accept;",
        *prerouting,
        "  }",
        "  chain postrouting {",
        "    type filter hook postrouting priority -300; policy accept;",
        *postrouting,
        "  }",
        "}",
    ]
