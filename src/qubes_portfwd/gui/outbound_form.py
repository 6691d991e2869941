"""The outbound rule dialog's fields as typed, checked field by field (pure, no Qt).

A rule accepts connections to an address, network or host name, for any protocol or for
tcp/udp with optional ports, as Qubes' own rule dialog offers.
"""

from dataclasses import dataclass, field

from ..model.errors import ValidationError
from ..model.hosts import parse_dsthost
from ..model.ports import parse_port_range
from ..model.rule import Action, FilterRule
from ..model.rule_text import COMMENT_CHARS, VALUE_FORM, format_rule, parse_rule

PROTO_CHOICES = ("any", "tcp", "udp")
ANY_ADDRESS = "*"
ADDRESS_FORM = "an IPv4/IPv6 address, a network A/N, a lowercase host name, or * for any"
PORTS_FORM = "a port 0-65535 or a range N-M, or empty for all ports"

ADDRESS = "address"
PORTS = "ports"
COMMENT = "comment"
GENERAL = "general"
FIELD_OF_KEY = {"dsthost": ADDRESS, "dstports": PORTS, "comment": COMMENT}


@dataclass(frozen=True)
class OutboundForm:
    """The dialog's values, still as typed."""

    untrusted_address: str = ""
    proto: str = "any"
    untrusted_ports: str = ""
    untrusted_comment: str = ""


@dataclass(frozen=True)
class OutboundCheck:
    """Either the rule to list, or a message for each field that is wrong."""

    rule: FilterRule | None
    errors: dict[str, str] = field(default_factory=dict)


def _address(form: OutboundForm) -> str | None:
    text = form.untrusted_address.strip()
    if not text:
        raise ValidationError(ADDRESS, f"required: {ADDRESS_FORM}")
    if text == ANY_ADDRESS:
        return None
    try:
        return parse_dsthost(ADDRESS, text).text
    except ValidationError as err:
        raise ValidationError(ADDRESS, f"{err.message}; expected {ADDRESS_FORM}") from None


def _ports(form: OutboundForm) -> str | None:
    text = form.untrusted_ports.strip()
    if not text:
        return None
    if form.proto not in ("tcp", "udp"):
        raise ValidationError(PORTS, "ports need the protocol tcp or udp; choose one or clear them")
    try:
        return parse_port_range(PORTS, text, lowest=0).text
    except ValidationError as err:
        raise ValidationError(PORTS, f"{err.message}; expected {PORTS_FORM}") from None


def _comment(form: OutboundForm) -> str | None:
    text = form.untrusted_comment.strip()
    if text and not set(text) <= COMMENT_CHARS:
        raise ValidationError(COMMENT, f"use {VALUE_FORM} and spaces")
    return text or None


def check_outbound(form: OutboundForm) -> OutboundCheck:
    """The rule the form describes, or what is wrong next to each field."""
    errors: dict[str, str] = {}
    if form.proto not in PROTO_CHOICES:
        errors[GENERAL] = f"protocol {form.proto!r}; expected any, tcp or udp"
    values: dict[str, str | None] = {}
    for name, check in ((ADDRESS, _address), (PORTS, _ports), (COMMENT, _comment)):
        try:
            values[name] = check(form)
        except ValidationError as err:
            errors[name] = err.message
    if errors:
        return OutboundCheck(None, errors)
    proto = None if form.proto == "any" else form.proto
    if values[ADDRESS] is None and proto is None:
        message = "* with any protocol allows everything; choose 'allow all outgoing' instead"
        return OutboundCheck(None, {ADDRESS: message})
    parts = ["action=accept"]
    if values[ADDRESS] is not None:
        parts.append(f"dsthost={values[ADDRESS]}")
    if proto is not None:
        parts.append(f"proto={proto}")
    if values[PORTS] is not None:
        parts.append(f"dstports={values[PORTS]}")
    if values[COMMENT] is not None:
        parts.append(f"comment={values[COMMENT]}")
    try:
        rule = parse_rule(" ".join(parts))
    except ValidationError as err:  # the model's last word: its message, next to its field
        return OutboundCheck(None, {FIELD_OF_KEY.get(err.field, GENERAL): err.message})
    assert isinstance(rule, FilterRule) and rule.action == Action.ACCEPT
    return OutboundCheck(rule)


def form_of_outbound(rule: FilterRule) -> OutboundForm:
    """The form showing a listed rule, for editing it."""
    return OutboundForm(
        untrusted_address=address_text(rule),
        proto=rule.proto or "any",
        untrusted_ports=rule.dstports.short if rule.dstports else "",
        untrusted_comment=rule.comment or "",
    )


def address_text(rule: FilterRule) -> str:
    """A single host without its full-length prefix, as Qubes' tab shows it."""
    if rule.dsthost is None:
        return ANY_ADDRESS
    text = rule.dsthost.text
    for suffix in ("/32", "/128"):
        full = rule.dsthost.type == ("dst4" if suffix == "/32" else "dst6")
        if full and text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def outbound_cells(rule: FilterRule) -> tuple[str, str, str, str]:
    """Address, protocol, port(s), comment: one row of the tab's list."""
    ports = rule.dstports.short if rule.dstports else "any"
    return (address_text(rule), rule.proto or "any", ports, rule.comment or "")


def rule_line(rule: FilterRule) -> str:
    return format_rule(rule)
