"""Per-qube entries: what the planner publishes and the agent in that qube applies.

A qube's entries are a flat QubesDB-style mapping of key to rule-like text:

    /qubes-portfwd/<id>/<4|6>     one hop of a forward (role=dnat or role=accept)

Qubes' own outbound firewall (`/qubes-firewall/`) is core-admin's and its worker's: not ours.

Values are untrusted where they are read (the agent): parse_* validate them.
"""

import functools
import ipaddress
import re
from dataclasses import dataclass

from .errors import ValidationError
from .hosts import Network, address_text, parse_cidr, parse_ip
from .ports import PortRange, parse_port_range
from .rule_text import split_options

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARD_PREFIX = "/qubes-portfwd/"
DOWNSTREAM = "downstream"  # `in=` of an internal forward: any vif (interface group 2)

ENTRY_KEYS = frozenset({"role", "family", "proto", "in", "ports", "to", "toports", "srchost"})
_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# Every order of each protocol set, to its (shared) value: nothing else is valid.
_PROTOS = {
    "tcp": ("tcp",),
    "udp": ("udp",),
    "tcp,udp": ("tcp", "udp"),
    "udp,tcp": ("udp", "tcp"),
}
# A qube's entries repeat a few sources (anywhere, the LAN) and next hops thousands of
# times: each text is parsed once, and the hops share one value (less memory at rest too).
# Bounded, so untrusted texts cannot grow it; errors are not cached, so raised every time.
_PARSED_TEXTS = 1024


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
    sources = ",".join([address_text(s) for s in hop.sources])
    if isinstance(hop, DnatHop):
        return (
            f"role=dnat {common} in={hop.inbound} ports={hop.ports.text} to={address_text(hop.to)} "
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
    protos = _PROTOS.get(options.get("proto", ""))
    if protos is None:
        raise ValidationError("proto", "expected tcp, udp or tcp,udp")
    untrusted_ports = options.get("ports", "")
    ports = parse_port_range("ports", untrusted_ports)
    sources = tuple(_source(s) for s in options.get("srchost", "").split(","))
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
    to = _next_hop(options.get("to", ""))
    if to is None:
        raise ValidationError("to", "expected the next hop's address")
    if to.version != family:
        raise ValidationError("to", f"expected an IPv{family} address")
    untrusted_toports = options.get("toports", "")
    # Most forwards keep their ports: the same text is the same (valid) range, shared.
    toports = (
        ports
        if untrusted_toports == untrusted_ports
        else parse_port_range("toports", untrusted_toports)
    )
    if len(toports) != len(ports):
        raise ValidationError("toports", "must have as many ports as ports")
    return DnatHop(forward_id, family, protos, inbound, ports, to, toports, sources)


@functools.lru_cache(maxsize=_PARSED_TEXTS)
def _source(untrusted_source: str) -> Network:
    return parse_cidr("srchost", untrusted_source)


@functools.lru_cache(maxsize=_PARSED_TEXTS)
def _next_hop(untrusted_address: str) -> IPAddress | None:
    return parse_ip(untrusted_address)
