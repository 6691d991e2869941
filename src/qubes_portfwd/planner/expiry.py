"""When rules run out (pure): which have expired, and the next instant the plan changes by itself.

The controller drops expired forwards at the moment they expire, so it must know that moment
ahead of time to wake up for it. Accept/drop rules are Qubes' own: qubesd expires them.
"""

from collections.abc import Iterable, Mapping, Sequence

from ..model.rule import ExpireAt, ForwardRule, QubeName, Rule


def is_expired(rule: Rule, now: float, boot_id: str) -> bool:
    return rule.expire is not None and rule.expire.expired(now, boot_id)


def live_rules(rules: Iterable[Rule], now: float, boot_id: str) -> tuple[Rule, ...]:
    """The rules still in force at `now` in the boot `boot_id`, in their order."""
    return tuple(rule for rule in rules if not is_expired(rule, now, boot_id))


def qubes_with_expired(
    rules: Mapping[QubeName, Sequence[Rule]], now: float, boot_id: str
) -> list[QubeName]:
    """Qubes that still hold a forward that has run out (sorted)."""
    return sorted(
        qube
        for qube, listed in rules.items()
        if any(isinstance(r, ForwardRule) and is_expired(r, now, boot_id) for r in listed)
    )


def next_expiry(rules: Mapping[QubeName, Sequence[Rule]], now: float) -> float | None:
    """The earliest `expire=` time after `now` of any forward; None when none has one ahead.

    Until-reboot rules are not in it: a reboot is no instant a clock can predict, so they are
    checked against the boot id whenever the service re-plans."""
    ahead = [
        rule.expire.timestamp
        for listed in rules.values()
        for rule in listed
        if isinstance(rule, ForwardRule)
        and isinstance(rule.expire, ExpireAt)
        and rule.expire.timestamp > now
    ]
    return float(min(ahead)) if ahead else None
