"""Checks of a forward before it is stored (pure): the path it is made for, its boot, and the
refusal of a forward that cannot work on this host. A `portfwd.<id>` feature is checked as
stock Qubes lets an extension check it (`domain-feature-pre-set`): refused or kept as sent,
never rewritten, so the value must already be complete."""

from dataclasses import replace

from ..model.errors import ValidationError
from ..model.forward_feature import feature_name
from ..model.rule import ExpireAt, ForwardRule, ForwardType, Rule, UntilReboot, forward_id
from ..model.rule_text import parse_rule
from ..model.topology import PathError, Topology


def current_via(target: str, rule: ForwardRule, topology: Topology) -> tuple[str, ...]:
    """The path a forward made now would record: the netvm chain, or the netvm alone."""
    if rule.forwardtype == ForwardType.EXTERNAL:
        return topology.path(target)
    netvm = topology[target].netvm
    if netvm is None:
        raise PathError(f"{target} has no netvm")
    return (netvm,)


def bind_rule(rule: Rule, target: str, topology: Topology, boot_id: str) -> Rule:
    """`expire=boot` becomes `boot:<this boot>`; a forward without via/follow gets via=now."""
    if not isinstance(rule, ForwardRule):
        return rule
    if isinstance(rule.expire, UntilReboot) and rule.expire.boot_id is None:
        rule = replace(rule, expire=UntilReboot(boot_id))
    if rule.via is None and not rule.follow:
        try:
            rule = replace(rule, via=current_via(target, rule, topology))
        except PathError as err:
            raise ValidationError("via", f"no network path to record ({err})") from None
    return rule


def check_possible(
    rule: ForwardRule, target: str, topology: Topology, stored: ForwardRule | None
) -> None:
    """A new forward, or a new path for a stored one, must be possible now.

    A stored forward keeps what it was made with: its path or a source qube may have changed
    since (it is then kept inactive, with the reason, until the user rebinds or fixes it).
    """
    if rule.via is not None and (stored is None or stored.via != rule.via):
        try:
            now = current_via(target, rule, topology)
        except PathError as err:
            raise ValidationError("via", f"no network path to record ({err})") from None
        if rule.via != now:
            raise ValidationError(
                "via",
                f"{','.join(rule.via)} is not {target}'s path; expected its path now "
                f"({','.join(now)}, target's netvm first) or follow=yes",
            )
    if stored is not None or rule.forwardtype != ForwardType.INTERNAL:
        return
    netvm = topology[target].netvm
    for name in rule.source_qubes:
        if name == target:
            raise ValidationError("srchost", f"{name} is the target itself; name other qubes")
        if name not in topology:
            raise ValidationError("srchost", f"no qube {name}; expected qubes behind {netvm}")
        if topology[name].netvm != netvm:
            actual = topology[name].netvm or "none"
            raise ValidationError(
                "srchost", f"{name} is not behind {netvm} (its netvm is {actual})"
            )


def check_forward_feature(
    feature_id: str,
    untrusted_value: str,
    target: str,
    topology: Topology,
    boot_id: str,
    now: float,
    stored: ForwardRule | None,
) -> ForwardRule:
    """The forward a `portfwd.<feature_id>` value of `target` holds, if it may be stored as is.

    `stored` is the forward stored under that name now: it may keep the path it was made for.
    """
    rule = parse_rule(untrusted_value)
    if not isinstance(rule, ForwardRule):
        raise ValidationError(
            "action", "expected action=forward (accept/drop rules belong in the firewall list)"
        )
    actual = forward_id(target, rule)
    if actual != feature_id:
        raise ValidationError(
            "feature name", f"this forward of {target} is {actual}: name it {feature_name(actual)}"
        )
    if rule.via is None and not rule.follow:
        try:
            now_via = ",".join(current_via(target, rule, topology))
        except PathError as err:
            raise ValidationError("via", f"required, and {target} has no path ({err})") from None
        raise ValidationError(
            "via", f"required: via={now_via} ({target}'s path now, its netvm first) or follow=yes"
        )
    if isinstance(rule.expire, UntilReboot) and rule.expire.boot_id != boot_id:
        given = "expire=boot" if rule.expire.boot_id is None else f"expire={rule.expire.text}"
        raise ValidationError(
            "expire", f"{given} is not this boot; expected expire=boot:{boot_id} (until reboot)"
        )
    if isinstance(rule.expire, ExpireAt) and rule.expire.expired(now, boot_id):
        raise ValidationError("expire", "already past; expected a later UNIX time")
    check_possible(rule, target, topology, stored)
    return rule
