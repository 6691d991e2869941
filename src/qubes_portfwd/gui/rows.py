"""What the windows' tables show, computed from the client's values (pure, no Qt)."""

from collections.abc import Sequence
from dataclasses import dataclass

from ..model.countdown import countdown_text
from ..model.errors import ValidationError
from ..model.forward_status import (
    ForwardState,
    ForwardStatus,
    HopState,
    HopStatus,
    parsed_rule,
)
from ..model.rule import ExpireAt, Expiry, FilterRule, ForwardRule, ForwardType
from ..model.rule_text import parse_rule

NONE = "-"
UNKNOWN = "?"
FORWARD_HEADER = (
    "Type",
    "IP",
    "Protocol",
    "Outside port(s)",
    "Qube port(s)",
    "Allowed sources",
    "Expires",
    "Comment",
    "State",
    "Hops",
)
OUTBOUND_HEADER = ("Action", "Address", "Protocol", "Port(s)", "Expires", "Comment")
HOP_MARK = {
    HopState.APPLIED: "✔",
    HopState.PENDING: "…",
    HopState.FAILED: "✘",
    HopState.INACTIVE: "○",
}
# Colours for hop states (also used by the overview's path drawing).
HOP_COLOUR = {
    HopState.APPLIED: "#2e7d32",
    HopState.PENDING: "#f9a825",
    HopState.FAILED: "#c62828",
    HopState.INACTIVE: "#757575",
}
STATE_COLOUR = {
    ForwardState.ACTIVE: HOP_COLOUR[HopState.APPLIED],
    ForwardState.INACTIVE: HOP_COLOUR[HopState.INACTIVE],
    ForwardState.CONFLICT: "#ef6c00",
    ForwardState.FAILED: HOP_COLOUR[HopState.FAILED],
}


def expiry_text(expire: Expiry | None, now: float) -> str:
    if expire is None:
        return "never"
    if isinstance(expire, ExpireAt):
        return f"in {countdown_text(expire.timestamp - now)}"
    return "at reboot"


def hops_text(hops: Sequence[HopStatus]) -> str:
    """`sys-net ✔ → sys-firewall ✘ → work ✔`."""
    return " → ".join(f"{hop.qube} {HOP_MARK[hop.state]}" for hop in hops) or "(no path)"


def sources_text(rule: ForwardRule) -> str:
    shown = ["any" if str(s) in ("0.0.0.0/0", "::/0") else str(s) for s in rule.srchost]
    return ", ".join(shown)


@dataclass(frozen=True)
class ForwardRow:
    """One forward (in one IP family) as a table row, with what the row's tooltip explains."""

    id: str
    target: str
    cells: tuple[str, ...]
    state: ForwardState
    details: str


def details_text(status: ForwardStatus, rule: ForwardRule | None) -> str:
    lines = [f"id {status.id}"]
    if status.state != ForwardState.ACTIVE and status.reason:
        lines.append(f"{status.state}: {status.reason}")
    lines += [f"{hop.qube}: {hop.error}" for hop in status.hops if hop.error]
    if status.public:
        lines.append("public: " + ", ".join(p.text for p in status.public))
    if rule is not None and rule.via:
        lines.append("made for the path " + " → ".join(reversed(rule.via)))
    return "\n".join(lines)


def forward_row(status: ForwardStatus, now: float) -> ForwardRow:
    rule = parsed_rule(status)
    family = f"IPv{status.family}"
    if rule is None:
        cells: tuple[str, ...] = (UNKNOWN, family, *(UNKNOWN,) * 6)
    else:
        cells = (
            str(rule.forwardtype),
            family,
            ", ".join(rule.protos),
            rule.srcports.short,
            rule.dstports.short,
            sources_text(rule),
            expiry_text(rule.expire, now),
            rule.comment or NONE,
        )
    state = str(status.state)
    if status.state != ForwardState.ACTIVE and status.reason:
        state = f"{status.state}: {status.reason}"
    return ForwardRow(
        id=status.id,
        target=status.target,
        cells=(*cells, state, hops_text(status.hops)),
        state=status.state,
        details=details_text(status, rule),
    )


def forward_rows(statuses: Sequence[ForwardStatus], now: float) -> list[ForwardRow]:
    """Rows in a stable order: by target, then outside port, then IP family."""
    ordered = sorted(statuses, key=lambda s: (s.target, s.rule, s.family))
    return [forward_row(status, now) for status in ordered]


def outbound_rows(untrusted_lines: Sequence[str], now: float) -> list[tuple[str, ...]]:
    """The qube's outbound rules as Qubes' tab lists them; forward lines are not shown here."""
    rows = []
    for untrusted_line in untrusted_lines:
        try:
            rule = parse_rule(untrusted_line)
        except ValidationError as err:
            rows.append(("?", NONE, NONE, NONE, NONE, f"unreadable rule: {err}"))
            continue
        if isinstance(rule, FilterRule):
            rows.append(outbound_row(rule, now))
    return rows


def outbound_row(rule: FilterRule, now: float) -> tuple[str, ...]:
    if rule.specialtarget == "dns":
        address = "DNS servers"
    else:
        address = rule.dsthost.text if rule.dsthost else "*"
    ports = rule.dstports.short if rule.dstports else "*"
    if rule.icmptype is not None:
        ports = f"icmp type {rule.icmptype}"
    return (
        str(rule.action),
        address,
        rule.proto or "any",
        ports,
        expiry_text(rule.expire, now),
        rule.comment or NONE,
    )


def is_internal(status: ForwardStatus) -> bool:
    rule = parsed_rule(status)
    return rule is not None and rule.forwardtype == ForwardType.INTERNAL
