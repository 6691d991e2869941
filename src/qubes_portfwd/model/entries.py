"""Per-qube entries: what the planner publishes and the agent in that qube applies.

A qube's entries are a flat QubesDB-style mapping of key to rule-like text:

    /qubes-portfwd/<id>/<4|6>     one hop of a forward (role=dnat or role=accept)

Qubes' own outbound firewall (`/qubes-firewall/`) is core-admin's and its worker's: not ours.

Values are untrusted where they are read (the agent): parse_* validate them.
"""

import ipaddress
import re
from dataclasses import dataclass

from .errors import ValidationError
from .hosts import Network, parse_cidr, parse_ip
from .ports import PortRange, parse_port_range
from .rule_text import split_options

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARD_PREFIX = "/qubes-portfwd/"
DOWNSTREAM = "downstream"  # `in=` of an internal forward: any vif (interface group 2)

ENTRY_KEYS = frozenset({"role", "family", "proto", "in", "ports", "to", "toports", "srchost"})
_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class DnatHop:
    """Rewrite `ports` arriving on `inbound` to `to`:`toports` and let them through.

    Matches only packets addressed to this qube itself, from `sources`.
    """

    forward_id: str
    family: int
    protos: tuple[str, ...]
    inbound: str
    ports: PortRange
    to: IPAddress
    toports: PortRange
    sources: tuple[Network, ...]


@dataclass(frozen=True)
class AcceptHop:
    """The target: accept input on `ports` from `sources`."""

    forward_id: str
    family: int
    protos: tuple[str, ...]
    ports: PortRange
    sources: tuple[Network, ...]


Hop = DnatHop | AcceptHop


def forward_key(forward_id: str, family: int) -> str:
    return f"{FORWARD_PREFIX}{forward_id}/{family}"


def hop_key(hop: Hop) -> str:
    return forward_key(hop.forward_id, hop.family)


def format_hop(hop: Hop) -> str:
    common = f"family={hop.family} proto={','.join(hop.protos)}"
    sources = ",".join(str(s) for s in hop.sources)
    if isinstance(hop, DnatHop):
        return (
            f"role=dnat {common} in={hop.inbound} ports={hop.ports.text} to={hop.to} "
            f"toports={hop.toports.text} srchost={sources}"
        )
    return f"role=accept {common} ports={hop.ports.text} srchost={sources}"


def parse_hop(untrusted_key: str, untrusted_value: str) -> Hop:
    """One `/qubes-portfwd/…` entry, checked as strictly as user input."""
    rest = untrusted_key[len(FORWARD_PREFIX) :]
    forward_id, _, untrusted_family = rest.partition("/")
    if not untrusted_key.startswith(FORWARD_PREFIX) or not _ID_RE.match(forward_id):
        raise ValidationError("key", f"{untrusted_key[:80]!r} is not /qubes-portfwd/<12 hex>/<4|6>")
    if untrusted_family not in ("4", "6"):
        raise ValidationError("key", f"{untrusted_key[:80]!r} does not end in /4 or /6")
    family = int(untrusted_family)
    if "comment=" in untrusted_value:
        raise ValidationError("entry", "comments have no place in an entry")
    options, _ = split_options(untrusted_value, ENTRY_KEYS)
    if options.get("family") != untrusted_family:
        raise ValidationError("family", f"must be {family}, as the key says")
    untrusted_protos = options.get("proto", "").split(",")
    if (
        not untrusted_protos
        or not set(untrusted_protos) <= {"tcp", "udp"}
        or len(set(untrusted_protos)) != len(untrusted_protos)
    ):
        raise ValidationError("proto", "expected tcp, udp or tcp,udp")
    protos = tuple(untrusted_protos)
    ports = parse_port_range("ports", options.get("ports", ""))
    sources = tuple(parse_cidr("srchost", s) for s in options.get("srchost", "").split(","))
    if any(s.version != family for s in sources):
        raise ValidationError("srchost", f"every source must be IPv{family}")
    role = options.get("role")
    if role == "accept":
        for key in ("in", "to", "toports"):
            if key in options:
                raise ValidationError(key, "only for role=dnat")
        return AcceptHop(forward_id, family, protos, ports, sources)
    if role != "dnat":
        raise ValidationError("role", "expected dnat or accept")
    inbound = options.get("in", "")
    if not _IFACE_RE.match(inbound):
        raise ValidationError("in", "expected an interface name or downstream")
    to = parse_ip(options.get("to", ""))
    if to is None:
        raise ValidationError("to", "expected the next hop's address")
    if to.version != family:
        raise ValidationError("to", f"expected an IPv{family} address")
    toports = parse_port_range("toports", options.get("toports", ""))
    if len(toports) != len(ports):
        raise ValidationError("toports", "must have as many ports as ports")
    return DnatHop(forward_id, family, protos, inbound, ports, to, toports, sources)
