"""NAT traversal requests as values and the forwards that grant them (pure).

A network qube's daemon sends `admin.vm.portfwd.NatRequest` with one line:

    client=ADDR proto=tcp|udp internal-port=N external-port=N lifetime=S origin=ORIGIN
      [wait=S] [exact=1] [description=free text]

`exact=1` refuses another outside port than `external-port` (UPnP's AddPortMapping).
`client` is the downstream address the request came from; the forward goes to the qube
behind the asking network qube that owns that address. The grant is an external forward
from anywhere on the chosen outside port to `internal-port`, expiring after the capped
lifetime, whose comment names its origin. Replies are one line of `key=value`.
A forward holds one family: the client's. An IPv6 client (PCP over IPv6) gets an IPv6
forward (srchost ::/0), apart from any IPv4 one of the same port.
"""

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from ..model.errors import ValidationError
from ..model.hosts import Network
from ..model.ports import PortRange
from ..model.rule import ANY4, ANY6, ExpireAt, ForwardRule, ForwardType, Rule
from ..model.rule_text import COMMENT_CHARS
from ..model.topology import Topology
from .nat_policy import Decision, NatAction, PolicyLine, decide

ORIGINS = ("NAT-PMP", "PCP", "UPnP")
MAX_DESCRIPTION = 64
MAX_WAIT = 300
MAX_LIFETIME_ASKED = 0xFFFF_FFFF
PORT_SEARCH = 256  # outside ports tried after the wanted one is taken
REQUEST_FORM = (
    "client=ADDR proto=tcp|udp internal-port=N external-port=N lifetime=S origin=ORIGIN "
    "[wait=S] [exact=1] [description=TEXT]"
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class NatAsk:
    """One mapping request, after validation and after identifying the qube."""

    via: str
    qube: str
    client: Address
    proto: str
    internal_port: int
    external_port: int
    lifetime: int
    origin: str
    description: str = ""
    exact: bool = False

    @property
    def wanted_port(self) -> int:
        return self.external_port or self.internal_port

    @property
    def family(self) -> int:
        return self.client.version

    @property
    def identity(self) -> tuple[str, str, int, int]:
        return (self.qube, self.proto, self.internal_port, self.family)


@dataclass(frozen=True)
class NatRequestFields:
    client: Address
    proto: str
    internal_port: int
    external_port: int
    lifetime: int
    origin: str
    wait: float
    description: str
    exact: bool = False


def _number(field: str, untrusted_value: str, highest: int) -> int:
    if not (untrusted_value.isascii() and untrusted_value.isdigit() and len(untrusted_value) <= 10):
        raise ValidationError(field, f"expected an integer 0-{highest}")
    value = int(untrusted_value)
    if value > highest:
        raise ValidationError(field, f"expected an integer 0-{highest}")
    return value


def clean_description(untrusted_text: str) -> str:
    """An application's description made fit for a rule comment (never refused for it)."""
    kept = "".join(c if c in COMMENT_CHARS else "_" for c in untrusted_text.strip())
    return kept[:MAX_DESCRIPTION].strip()


def parse_nat_request(untrusted_text: str) -> NatRequestFields:
    untrusted_head, _, untrusted_description = untrusted_text.strip().partition("description=")
    untrusted_fields: dict[str, str] = {}
    for untrusted_word in untrusted_head.split():
        key, has_value, value = untrusted_word.partition("=")
        if not has_value or key in untrusted_fields:
            raise ValidationError("request", f"expected {REQUEST_FORM}")
        untrusted_fields[key] = value
    required = ("client", "proto", "internal-port", "external-port", "lifetime", "origin")
    extra = set(untrusted_fields) - {*required, "wait", "exact"}
    if extra or any(k not in untrusted_fields for k in required):
        raise ValidationError("request", f"expected {REQUEST_FORM}")
    try:
        client = ipaddress.ip_address(untrusted_fields["client"])
    except ValueError:
        raise ValidationError("client", "expected an IPv4 or IPv6 address") from None
    proto = untrusted_fields["proto"]
    if proto not in ("tcp", "udp"):
        raise ValidationError("proto", "expected tcp or udp")
    origin = untrusted_fields["origin"]
    if origin not in ORIGINS:
        raise ValidationError("origin", f"expected one of {', '.join(ORIGINS)}")
    internal_port = _number("internal-port", untrusted_fields["internal-port"], 65535)
    lifetime = _number("lifetime", untrusted_fields["lifetime"], MAX_LIFETIME_ASKED)
    if internal_port == 0 and lifetime != 0:
        raise ValidationError("internal-port", "expected 1-65535 (0 only with lifetime=0)")
    return NatRequestFields(
        client=client,
        proto=proto,
        internal_port=internal_port,
        external_port=_number("external-port", untrusted_fields["external-port"], 65535),
        lifetime=lifetime,
        origin=origin,
        wait=float(_number("wait", untrusted_fields.get("wait", "0"), MAX_WAIT)),
        description=clean_description(untrusted_description),
        exact=untrusted_fields.get("exact", "0") == "1",
    )


def owner_of(topology: Topology, netvm: str, client: Address) -> str | None:
    """The qube behind `netvm` that owns `client`, as the netvm's anti-spoofing pairs them."""
    for qube in topology.downstream(netvm):
        if client in (qube.address4, qube.address6):
            return qube.name
    return None


def comment_for(origin: str, description: str) -> str:
    return f"{origin}: {description}" if description else origin


def _is_nat_comment(comment: str | None) -> bool:
    return comment is not None and any(
        comment == origin or comment.startswith(f"{origin}: ") for origin in ORIGINS
    )


def _any_source(client: Address) -> Network:
    return ANY4 if client.version == 4 else ANY6


def is_mapping(rule: Rule, proto: str, internal_port: int, family: int | None = None) -> bool:
    """A forward made by NAT traversal for this protocol and inside port (0: any port), in
    `family` (None: either)."""
    return (
        isinstance(rule, ForwardRule)
        and (family is None or rule.families == (family,))
        and rule.forwardtype == ForwardType.EXTERNAL
        and rule.proto == proto
        and len(rule.dstports) == 1
        and (internal_port == 0 or rule.dstports.first == internal_port)
        and _is_nat_comment(rule.comment)
    )


def find_mapping(rules: Sequence[Rule], ask: NatAsk) -> int | None:
    for index, rule in enumerate(rules):
        if is_mapping(rule, ask.proto, ask.internal_port, ask.family):
            return index
    return None


def mapping_rule(ask: NatAsk, outside_port: int, lifetime: int, now: float) -> ForwardRule:
    return ForwardRule(
        forwardtype=ForwardType.EXTERNAL,
        srcports=PortRange(outside_port, outside_port),
        dstports=PortRange(ask.internal_port, ask.internal_port),
        srchost=(_any_source(ask.client),),
        proto=ask.proto,
        expire=ExpireAt(int(now) + lifetime),
        comment=comment_for(ask.origin, ask.description),
    )


def renewed(rule: ForwardRule, lifetime: int, now: float) -> ForwardRule:
    return replace(rule, expire=ExpireAt(int(now) + lifetime))


def granted_lifetime(asked: int, decision: Decision) -> int:
    return max(1, min(asked, decision.max_lifetime))


def candidate_ports(wanted: int, lines: Sequence[PolicyLine], decision: Decision) -> Iterator[int]:
    """Outside ports to try: the wanted one, then the next ones the same decision covers."""

    # An approved or allowed port must not lead to a port the policy would treat worse.
    def acceptable(port: int) -> bool:
        action = decide(lines, port).action
        return (
            action == NatAction.ALLOW
            if decision.action == NatAction.ALLOW
            else (action != NatAction.DENY)
        )

    if acceptable(wanted):
        yield wanted
    tried = 0
    port = max(wanted, 1024)
    while tried < PORT_SEARCH and port < 65535:
        port += 1
        if acceptable(port):
            tried += 1
            yield port


def format_reply(**fields: object) -> bytes:
    return (" ".join(f"{k.replace('_', '-')}={v}" for k, v in fields.items()) + "\n").encode()
