"""A qube's outbound rule lines as the Firewall tab's choices, and back (pure, no Qt).

The tab offers what Qubes' own settings tab offers: allow everything, or limit outgoing
connections to a list of accepted destinations, with DNS and ICMP allowed and an optional
temporary full access (an accept rule with `expire=`). Lines that do not fit that shape
(drop rules before the end, ICMP types, other special targets, …) cannot be edited here:
`read_conf` names each one and why, and the tab shows the whole list read-only.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from ..model.errors import ValidationError
from ..model.rule import Action, ExpireAt, FilterRule
from ..model.rule_text import format_rule, parse_rule
from .rows import outbound_row

ACCEPT_ALL = "action=accept"
DROP_ALL = "action=drop"
DNS_RULE = "action=accept specialtarget=dns"
ICMP_RULE = "action=accept proto=icmp"
NO_RULE = "(no rule)"


@dataclass(frozen=True)
class OutboundConf:
    """The tab's state: `rules` are the accepted destinations, in their order."""

    allow_all: bool = True
    rules: tuple[FilterRule, ...] = ()
    allow_dns: bool = True
    allow_icmp: bool = True
    full_access_until: int | None = None  # UNIX time of the temporary full access's end


@dataclass(frozen=True)
class Blocker:
    """One line the tab cannot represent, and why (shown next to it)."""

    line: str
    reason: str


@dataclass(frozen=True)
class ConfRead:
    """Either the tab's state, or the lines that keep the tab from editing the list."""

    conf: OutboundConf | None
    blockers: tuple[Blocker, ...] = ()
    kept: tuple[str, ...] = ()  # lines the tab neither shows nor changes (forwards)


def is_editable_rule(rule: FilterRule) -> str | None:
    """None when the tab's rule dialog can show `rule`, else why not."""
    if rule.action != Action.ACCEPT:
        return "a drop rule before the end (the tab lists only accepted destinations)"
    if rule.specialtarget is not None:
        return f"special target {rule.specialtarget} with other options"
    if rule.icmptype is not None or rule.proto == "icmp":
        return "an ICMP rule for one destination (the dialog offers any, tcp or udp)"
    if rule.dsthost is None and rule.proto is None:
        if rule.expire is not None:
            return "a temporary full access with a comment (the tab would drop the comment)"
        return "an accept-all rule before the end"
    if rule.expire is not None:
        return "an expiring rule for one destination (only full access can expire here)"
    return None


def read_conf(untrusted_lines: Sequence[str]) -> ConfRead:
    """The tab's state for these lines, or every line that blocks editing and why."""
    blockers: list[Blocker] = []
    kept: list[str] = []
    parsed: list[tuple[str, FilterRule]] = []
    for untrusted_line in (line.strip() for line in untrusted_lines):
        if not untrusted_line:
            continue
        try:
            rule = parse_rule(untrusted_line)
        except ValidationError as err:
            blockers.append(Blocker(untrusted_line, f"unreadable: {err}"))
            continue
        if isinstance(rule, FilterRule):
            parsed.append((format_rule(rule), rule))
        else:
            kept.append(untrusted_line)
    if not parsed:
        blockers.append(Blocker(NO_RULE, "the list is empty: a last rule must allow or drop all"))
        return ConfRead(None, tuple(blockers), tuple(kept))
    last_line, _ = parsed[-1]
    if last_line not in (ACCEPT_ALL, DROP_ALL):
        blockers.append(
            Blocker(last_line, "the last rule must be exactly action=accept or action=drop")
        )
    allow_dns = allow_icmp = False
    full_access: int | None = None
    rules: list[FilterRule] = []
    for line, rule in parsed[:-1]:
        if line == DNS_RULE:
            allow_dns = True
        elif line == ICMP_RULE:
            allow_icmp = True
        elif _is_full_access(rule):
            if full_access is not None:
                blockers.append(Blocker(line, "a second temporary full access"))
            assert isinstance(rule.expire, ExpireAt)
            full_access = rule.expire.timestamp
        elif (reason := is_editable_rule(rule)) is not None:
            blockers.append(Blocker(line, reason))
        else:
            rules.append(rule)
    if blockers:
        return ConfRead(None, tuple(blockers), tuple(kept))
    conf = OutboundConf(
        allow_all=last_line == ACCEPT_ALL,
        rules=tuple(rules),
        allow_dns=allow_dns,
        allow_icmp=allow_icmp,
        full_access_until=full_access,
    )
    return ConfRead(conf, (), tuple(kept))


def _is_full_access(rule: FilterRule) -> bool:
    return (
        rule.action == Action.ACCEPT
        and isinstance(rule.expire, ExpireAt)
        and rule.comment is None
        and rule.dsthost is None
        and rule.proto is None
        and rule.specialtarget is None
    )


def conf_lines(conf: OutboundConf, kept: Sequence[str] = ()) -> list[str]:
    """The rule lines to Set, in Qubes' settings order: the listed destinations, the
    temporary full access, DNS, ICMP, then the last rule; `kept` lines go first, unchanged.

    Limited or not, the listed destinations are kept (Qubes keeps them too)."""
    lines = [*kept, *(format_rule(rule) for rule in conf.rules)]
    if conf.allow_all:
        return [*lines, ACCEPT_ALL]
    if conf.full_access_until is not None:
        lines.append(f"action=accept expire={conf.full_access_until}")
    if conf.allow_dns:
        lines.append(DNS_RULE)
    if conf.allow_icmp:
        lines.append(ICMP_RULE)
    return [*lines, DROP_ALL]


def full_access_minutes(until: int | None, now: float) -> int | None:
    """Whole minutes of temporary full access left (at least 1), None when none or past."""
    if until is None or until <= now:
        return None
    return max(1, -(-int(until - now) // 60))


def read_only_rows(
    untrusted_lines: Sequence[str], blockers: Sequence[Blocker], now: float
) -> list[tuple[str, ...]]:
    """Every outbound line as the list shows it, with why it blocks editing (or nothing)."""
    why = {blocker.line: blocker.reason for blocker in blockers}
    rows: list[tuple[str, ...]] = []
    for untrusted_line in (line.strip() for line in untrusted_lines):
        if not untrusted_line:
            continue
        try:
            rule = parse_rule(untrusted_line)
        except ValidationError:
            rows.append(("?", "-", "-", "-", "-", "-", why.get(untrusted_line, "unreadable")))
            continue
        if isinstance(rule, FilterRule):
            rows.append((*outbound_row(rule, now), why.get(format_rule(rule), "")))
    rows += [("-", "-", "-", "-", "-", "-", b.reason) for b in blockers if b.line == NO_RULE]
    return rows
