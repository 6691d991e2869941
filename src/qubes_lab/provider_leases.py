"""A VPN provider's NAT-PMP mapping table as it hands out ports itself (pure).

Commercial providers ignore the port a client suggests, pick the public port, grant short
leases and may move a mapping to another port; this table does the same so the tunnel
qube's keeper can be tested against that behaviour. Time and the port chooser are passed in.
"""

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.natpmp import wire

IPv4 = ipaddress.IPv4Address
ChoosePort = Callable[[PortRange, frozenset[int]], int | None]  # None: every port is in use


@dataclass(frozen=True, order=True)
class ClientPort:
    """A client's private port: who asked, for which protocol and port."""

    client: IPv4
    proto: wire.Protocol
    internal_port: int


@dataclass(frozen=True)
class Grant:
    public_port: int
    expires_at: float


@dataclass(frozen=True)
class ProviderTable:
    grants: Mapping[ClientPort, Grant]
    ports: PortRange  # where public ports are picked
    lease: int  # the longest lifetime granted, seconds

    def in_use(self, proto: str) -> frozenset[int]:
        return frozenset(g.public_port for k, g in self.grants.items() if k.proto == proto)

    def expired(self, now: float) -> "ProviderTable":
        return replace(self, grants={k: g for k, g in self.grants.items() if g.expires_at > now})


def handle_mapping(
    table: ProviderTable,
    client: IPv4,
    request: wire.MappingRequest,
    now: float,
    epoch: int,
    choose: ChoosePort,
) -> tuple[ProviderTable, wire.Response]:
    """Grant, renew (same public port) or delete; the suggested port is ignored, as providers do."""
    table = table.expired(now)
    opcode = wire.opcode_for(request.protocol)
    if request.is_delete:
        grants = {
            k: g
            for k, g in table.grants.items()
            if not (
                k.client == client
                and k.proto == request.protocol
                and (request.deletes_all or k.internal_port == request.internal_port)
            )
        }
        answer = wire.MappingResponse(request.protocol, epoch, request.internal_port, 0, 0)
        return replace(table, grants=grants), answer
    key = ClientPort(client, request.protocol, request.internal_port)
    lifetime = min(request.lifetime, table.lease)
    current = table.grants.get(key)
    if current is not None:
        public_port = current.public_port
    else:
        chosen = choose(table.ports, table.in_use(request.protocol))
        if chosen is None:
            error = wire.ErrorResponse(opcode, wire.ResultCode.OUT_OF_RESOURCES, epoch)
            return table, error
        public_port = chosen
    grants = {**table.grants, key: Grant(public_port, now + lifetime)}
    answer = wire.MappingResponse(
        request.protocol, epoch, request.internal_port, public_port, lifetime
    )
    return replace(table, grants=grants), answer


def rotated(table: ProviderTable, now: float, choose: ChoosePort) -> ProviderTable:
    """Every live mapping moved to a fresh public port (never its old one); leases kept."""
    table = table.expired(now)
    grants = dict(table.grants)
    for key in sorted(grants):
        taken = frozenset(g.public_port for k, g in grants.items() if k.proto == key.proto) | {
            grants[key].public_port
        }
        chosen = choose(table.ports, frozenset(taken))
        if chosen is not None:
            grants[key] = replace(grants[key], public_port=chosen)
    return replace(table, grants=grants)


def dnat_ruleset(
    table_name: str, ifname: str, public: IPv4, grants: Mapping[ClientPort, Grant]
) -> str:
    """One nft transaction replacing the provider's DNAT: public:port -> client:private port."""
    lines = [f"table ip {table_name} {{}}", f"delete table ip {table_name}"]
    lines.append(f"table ip {table_name} {{")
    for proto in ("tcp", "udp"):
        elements = [
            f"{g.public_port} : {k.client} . {k.internal_port}"
            for k, g in sorted(grants.items())
            if k.proto == proto
        ]
        lines.append(f"  map {proto}_ports {{")
        lines.append("    type inet_service : ipv4_addr . inet_service")
        if elements:
            lines.append(f"    elements = {{ {', '.join(elements)} }}")
        lines.append("  }")
    lines += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f'    iifname "{ifname}" ip daddr {public} dnat ip to tcp dport map @tcp_ports',
        f'    iifname "{ifname}" ip daddr {public} dnat ip to udp dport map @udp_ports',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"
