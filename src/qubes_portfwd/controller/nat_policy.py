"""dom0's NAT traversal policy: per qube and outside port range, deny / allow / ask.

A qube's policy is an ordered list of lines `ports=N[-M] action=deny|allow|ask
[max-lifetime=SECONDS]`; the first line whose ports hold the asked outside port decides.
Without a match the answer is ask, with DEFAULT_MAX_LIFETIME. It is stored as one feature of
that qube, `portfwd-nat-policy` = the lines joined by `;` (feature values are one line):
one key, so a change is one Set, checked whole and in force whole. Pure: no I/O.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..model.errors import ValidationError
from ..model.nat_policy_feature import FEATURE_POLICY, SEPARATOR, join_lines
from ..model.ports import PortRange, parse_port_range

DEFAULT_MAX_LIFETIME = 3600
MAX_MAX_LIFETIME = 7 * 24 * 3600
MAX_LINES = 256
# 256 lines of the longest form fit; far below a qrexec payload, small enough for qubes.xml.
MAX_FEATURE_VALUE = 16384
LINE_FORM = "ports=N[-M] action=deny|allow|ask [max-lifetime=SECONDS]"


class NatAction(StrEnum):
    DENY = "deny"
    ALLOW = "allow"
    ASK = "ask"


@dataclass(frozen=True)
class PolicyLine:
    ports: PortRange
    action: NatAction
    max_lifetime: int = DEFAULT_MAX_LIFETIME

    @property
    def text(self) -> str:
        return f"ports={self.ports.short} action={self.action} max-lifetime={self.max_lifetime}"


@dataclass(frozen=True)
class Decision:
    action: NatAction
    max_lifetime: int


DEFAULT_DECISION = Decision(NatAction.ASK, DEFAULT_MAX_LIFETIME)


def decide(lines: Sequence[PolicyLine], outside_port: int) -> Decision:
    """The first line holding `outside_port` decides; none: ask."""
    for line in lines:
        if outside_port in line.ports:
            return Decision(line.action, line.max_lifetime)
    return DEFAULT_DECISION


def _parse_lifetime(untrusted_value: str) -> int:
    if not (untrusted_value.isascii() and untrusted_value.isdigit() and len(untrusted_value) < 9):
        raise ValidationError("max-lifetime", f"expected seconds 1-{MAX_MAX_LIFETIME}")
    seconds = int(untrusted_value)
    if not 1 <= seconds <= MAX_MAX_LIFETIME:
        raise ValidationError("max-lifetime", f"expected seconds 1-{MAX_MAX_LIFETIME}")
    return seconds


def parse_policy_line(untrusted_line: str) -> PolicyLine:
    untrusted_fields: dict[str, str] = {}
    for untrusted_word in untrusted_line.split():
        key, has_value, value = untrusted_word.partition("=")
        if not has_value or key not in ("ports", "action", "max-lifetime"):
            raise ValidationError("policy", f"expected {LINE_FORM}")
        if key in untrusted_fields:
            raise ValidationError(key, "given twice")
        untrusted_fields[key] = value
    if "ports" not in untrusted_fields or "action" not in untrusted_fields:
        raise ValidationError("policy", f"ports= and action= are required: {LINE_FORM}")
    ports = parse_port_range("ports", untrusted_fields["ports"])
    try:
        action = NatAction(untrusted_fields["action"])
    except ValueError:
        raise ValidationError("action", "expected deny, allow or ask") from None
    lifetime = DEFAULT_MAX_LIFETIME
    if "max-lifetime" in untrusted_fields:
        lifetime = _parse_lifetime(untrusted_fields["max-lifetime"])
    return PolicyLine(ports, action, lifetime)


def parse_policy(untrusted_text: str) -> tuple[PolicyLine, ...]:
    """A whole policy, all or nothing; blank lines are skipped; errors name their line."""
    lines = []
    for line_no, untrusted_line in enumerate(untrusted_text.splitlines(), start=1):
        if not untrusted_line.strip():
            continue
        try:
            lines.append(parse_policy_line(untrusted_line))
        except ValidationError as err:
            raise err.at_line(line_no) from None
    if len(lines) > MAX_LINES:
        raise ValidationError("policy", f"at most {MAX_LINES} lines")
    return tuple(lines)


def format_policy(lines: Sequence[PolicyLine]) -> str:
    return "".join(f"{line.text}\n" for line in lines)


def policy_value(lines: Sequence[PolicyLine]) -> str:
    """The feature value of a policy: its lines joined by `; `."""
    return join_lines(line.text for line in lines)


def parse_policy_feature(untrusted_value: str) -> tuple[PolicyLine, ...]:
    """A `portfwd-nat-policy` value, all or nothing; errors name the field and the line."""
    form = f"lines '{LINE_FORM}' joined by '{SEPARATOR}'"
    if len(untrusted_value) > MAX_FEATURE_VALUE:
        raise ValidationError(FEATURE_POLICY, f"at most {MAX_FEATURE_VALUE} characters of {form}")
    if not (untrusted_value.isascii() and untrusted_value.isprintable()):
        raise ValidationError(FEATURE_POLICY, f"printable ASCII on one line: {form}")
    try:
        return parse_policy("\n".join(untrusted_value.split(SEPARATOR)))
    except ValidationError as err:
        raise ValidationError(FEATURE_POLICY, f"{err} ({form})") from None


def policy_of(features: Mapping[str, str]) -> tuple[PolicyLine, ...]:
    """A qube's policy from its features; none set: the empty policy (every port asks).

    Raises ValidationError for a value stored without our check (before the extension ran).
    """
    untrusted_value = features.get(FEATURE_POLICY)
    return () if untrusted_value is None else parse_policy_feature(untrusted_value)
