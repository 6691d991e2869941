"""What the service adds to a forward at Set (pure): the boot id and the path it is made for,
and the refusal of a forward that cannot work on this host."""

from collections.abc import Iterable
from dataclasses import replace

from ..model.errors import ValidationError
from ..model.rule import ForwardRule, ForwardType, Rule, UntilReboot, forward_id
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


def parse_and_bind(
    untrusted_text: str,
    target: str,
    topology: Topology,
    boot_id: str,
    stored: Iterable[Rule] = (),
) -> list[Rule]:
    """A whole firewall.Set payload, all or nothing; an error names its line and field.

    `stored` are the target's rules now: a forward already among them may keep its path.
    """
    known = {forward_id(target, r): r for r in stored if isinstance(r, ForwardRule)}
    rules: list[Rule] = []
    for line_no, untrusted_line in enumerate(untrusted_text.splitlines(), start=1):
        if not untrusted_line.strip():
            continue
        try:
            rule = bind_rule(parse_rule(untrusted_line), target, topology, boot_id)
            if isinstance(rule, ForwardRule):
                check_possible(rule, target, topology, known.get(forward_id(target, rule)))
        except ValidationError as err:
            raise err.at_line(line_no) from None
        rules.append(rule)
    return rules
