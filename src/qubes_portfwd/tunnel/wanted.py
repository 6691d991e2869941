"""Which provider mappings a tunnel qube needs: one per (protocol, port) its forwards enter by.

Pure: reads the qube's entries (untrusted: published by dom0 but read where they land).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from ..model.entries import FORWARD_PREFIX, DnatHop, parse_hop
from ..model.errors import ValidationError
from ..natpmp.wire import Protocol

UPLINK_KEY = "/qubes-portfwd-uplink"
# NAT-PMP maps one port per request: a wide range would flood the provider; cap the total.
MAX_MAPPINGS = 256


@dataclass(frozen=True, order=True)
class MappingKey:
    """One port on the tunnel interface that the provider should expose."""

    proto: Protocol
    port: int

    @property
    def text(self) -> str:
        return f"{self.proto}/{self.port}"


@dataclass(frozen=True)
class Wanted:
    """The mappings to hold (each with the forwards it serves), and what could not be held."""

    mappings: Mapping[MappingKey, frozenset[str]]
    skipped: tuple[str, ...] = ()


def tunnel_hops(entries: Mapping[str, str]) -> tuple[list[DnatHop], list[str]]:
    """IPv4 DNAT hops entering by the qube's uplink (its tunnel interface); and parse errors."""
    uplink = entries.get(UPLINK_KEY)
    hops: list[DnatHop] = []
    errors: list[str] = []
    if not uplink:
        return hops, errors
    for untrusted_key, untrusted_value in sorted(entries.items()):
        if not untrusted_key.startswith(FORWARD_PREFIX):
            continue
        try:
            hop = parse_hop(untrusted_key, untrusted_value)
        except ValidationError as err:
            errors.append(f"{untrusted_key}: {err}")
            continue
        # NAT-PMP is IPv4 only (RFC 6886); IPv6 forwards need no provider port.
        if isinstance(hop, DnatHop) and hop.family == 4 and hop.inbound == uplink:
            hops.append(hop)
    return hops, errors


def wanted_mappings(entries: Mapping[str, str], limit: int = MAX_MAPPINGS) -> Wanted:
    hops, skipped = tunnel_hops(entries)
    mappings: dict[MappingKey, set[str]] = {}
    for hop in hops:
        for proto in hop.protos:
            for port in range(hop.ports.first, hop.ports.last + 1):
                key = MappingKey(proto, port)  # type: ignore[arg-type]
                if key not in mappings and len(mappings) >= limit:
                    skipped.append(f"{hop.forward_id}: {key.text}: more than {limit} ports")
                    continue
                mappings.setdefault(key, set()).add(hop.forward_id)
    return Wanted({k: frozenset(v) for k, v in mappings.items()}, tuple(skipped))
