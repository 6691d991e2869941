"""qvm-firewall's rule table: Qubes' columns, plus forward columns when the list has forwards."""

from collections.abc import Sequence

from ..model.rule import ExpireAt, Expiry, FilterRule, ForwardRule, Rule, forward_id

FILTER_HEADER = (
    "NO",
    "ACTION",
    "HOST",
    "PROTOCOL",
    "PORT(S)",
    "SPECIAL TARGET",
    "ICMP TYPE",
    "EXPIRE",
    "COMMENT",
)
# Inserted after ACTION (and ID before COMMENT) only when a forward is listed, so a list
# without forwards reads exactly as Qubes prints it.
FORWARD_COLUMNS = ("FWD TYPE", "SRCHOST")
NONE = "-"


def pretty_expire(expire: Expiry | None, now: float) -> str:
    """Qubes shows the seconds left (`+300s`); a rule until reboot says so."""
    if expire is None:
        return NONE
    if isinstance(expire, ExpireAt):
        return f"{expire.timestamp - now:+.0f}s"
    return "boot"


def port_mapping(rule: ForwardRule) -> str:
    """`80` when the qube's port is the outside one, else `80→8080`."""
    if rule.srcports == rule.dstports:
        return rule.srcports.short
    return f"{rule.srcports.short}→{rule.dstports.short}"


def _filter_cells(rule: FilterRule, now: float) -> list[str]:
    return [
        str(rule.action),
        rule.dsthost.text if rule.dsthost else NONE,
        rule.proto or NONE,
        rule.dstports.short if rule.dstports else NONE,
        rule.specialtarget or NONE,
        str(rule.icmptype) if rule.icmptype is not None else NONE,
        pretty_expire(rule.expire, now),
        rule.comment or NONE,
    ]


def _forward_cells(rule: ForwardRule, now: float) -> list[str]:
    return [
        str(rule.action),
        NONE,
        ",".join(rule.protos),
        port_mapping(rule),
        NONE,
        NONE,
        pretty_expire(rule.expire, now),
        rule.comment or NONE,
    ]


def firewall_rows(target: str, rules: Sequence[Rule], now: float) -> list[list[str]]:
    """Header and one row per rule, numbered from 0 as `del --rule-no` and `--before` count."""
    with_forwards = any(isinstance(rule, ForwardRule) for rule in rules)
    header = list(FILTER_HEADER)
    if with_forwards:
        header[2:2] = FORWARD_COLUMNS
        header[-1:-1] = ["ID"]
    rows = [header]
    for number, rule in enumerate(rules):
        if isinstance(rule, ForwardRule):
            cells = _forward_cells(rule, now)
            extra = [str(rule.forwardtype), ",".join(str(s) for s in rule.srchost)]
            rule_id = forward_id(target, rule)
        else:
            cells = _filter_cells(rule, now)
            extra = [NONE, NONE]
            rule_id = NONE
        if with_forwards:
            cells[1:1] = extra
            cells[-1:-1] = [rule_id]
        rows.append([str(number), *cells])
    return rows
