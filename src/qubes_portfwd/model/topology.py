"""The host's qubes as values, Qubes' address rules, and the network path of a qube."""

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType

from .errors import ValidationError
from .hosts import is_qube_name

IPV6_PREFIX = "fd09:24ef:4179::"
DNS_SERVERS4 = (ipaddress.IPv4Address("10.139.1.1"), ipaddress.IPv4Address("10.139.1.2"))
DNS_SERVERS6 = (
    ipaddress.IPv6Address("fd09:24ef:4179::a8b:1"),
    ipaddress.IPv6Address("fd09:24ef:4179::a8b:2"),
)
DEFAULT_UPLINK = "eth0"

# Feature names: `ipv6` is Qubes' own; the other two are this project's.
FEATURE_IPV6 = "ipv6"
FEATURE_TUNNEL = "portfwd-tunnel"
FEATURE_UPLINK = "portfwd-uplink"


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Qube:
    """One qube, with the properties and features the forwarding feature reads.

    `ip`/`ip6` are explicit overrides; the effective addresses come from `address4`/`address6`,
    derived from the qid (or dispid for disposables) as Qubes derives them.
    """

    name: str
    qid: int
    klass: str = "AppVM"
    netvm: str | None = None
    provides_network: bool = False
    ip: ipaddress.IPv4Address | None = None
    ip6: ipaddress.IPv6Address | None = None
    dispid: int | None = None
    features: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", _frozen(self.features))

    @cached_property
    def address4(self) -> ipaddress.IPv4Address:
        if self.ip is not None:
            return self.ip
        if self.dispid is not None:
            return ipaddress.IPv4Address(f"10.138.{self.dispid >> 8}.{self.dispid & 0xFF}")
        return ipaddress.IPv4Address(f"10.137.{self.qid >> 8}.{self.qid & 0xFF}")

    @property
    def ipv6_enabled(self) -> bool:
        return self.features.get(FEATURE_IPV6, "") not in ("", "0")

    @cached_property
    def address6(self) -> ipaddress.IPv6Address | None:
        if not self.ipv6_enabled:
            return None
        if self.ip6 is not None:
            return self.ip6
        if self.dispid is not None:
            return ipaddress.IPv6Address(f"{IPV6_PREFIX}a8a:{self.dispid:x}")
        return ipaddress.IPv6Address(f"{IPV6_PREFIX}a89:{self.qid:x}")

    def address(self, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return self.address4 if family == 4 else self.address6

    @property
    def is_tunnel(self) -> bool:
        return self.features.get(FEATURE_TUNNEL, "") not in ("", "0")

    @property
    def uplink(self) -> str:
        """The interface forwards enter by at an edge: the tunnel's, or the physical one."""
        return self.features.get(FEATURE_UPLINK) or DEFAULT_UPLINK

    def with_changes(self, **changes: object) -> "Qube":
        return replace(self, **changes)  # type: ignore[arg-type]


class PathError(Exception):
    """No network path: the reason is shown to the user as an inactive forward's cause."""


@dataclass(frozen=True)
class Topology:
    qubes: Mapping[str, Qube]

    def __post_init__(self) -> None:
        object.__setattr__(self, "qubes", _frozen(self.qubes))  # type: ignore[arg-type]

    @classmethod
    def of(cls, *qubes: Qube) -> "Topology":
        return cls({q.name: q for q in qubes})

    def __getitem__(self, name: str) -> Qube:
        return self.qubes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.qubes

    def replace_qube(self, qube: Qube) -> "Topology":
        return Topology({**self.qubes, qube.name: qube})

    def downstream(self, netvm: str) -> tuple[Qube, ...]:
        """Qubes whose netvm is `netvm`, in qid order (each has a vif there)."""
        return tuple(
            sorted((q for q in self.qubes.values() if q.netvm == netvm), key=lambda q: q.qid)
        )

    def path(self, name: str) -> tuple[str, ...]:
        """Network qubes from `name`'s netvm up to its edge, inclusive.

        The edge is the first netvm-less qube, or the first tunnel qube. Raises PathError
        when there is none.
        """
        hops: list[str] = []
        current = self.qubes[name]
        while True:
            if current.netvm is None:
                if not hops:
                    raise PathError(f"{name} has no netvm")
                return tuple(hops)
            if current.netvm not in self.qubes:
                raise PathError(f"netvm {current.netvm} of {current.name} does not exist")
            upstream = self.qubes[current.netvm]
            if not upstream.provides_network:
                raise PathError(f"{upstream.name} does not provide network")
            if upstream.name in hops or upstream.name == name:
                raise PathError(f"netvm loop through {upstream.name}")
            hops.append(upstream.name)
            if upstream.is_tunnel:
                return tuple(hops)
            current = upstream


def check_qube_name(field_name: str, untrusted_name: str) -> str:
    if not is_qube_name(untrusted_name):
        raise ValidationError(
            field_name,
            f"{untrusted_name!r} is not a qube name; expected a letter, then letters, digits, -_.",
        )
    return untrusted_name
