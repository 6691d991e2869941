"""What the service adds to a forward at Set (pure): the boot id and the path it is made for."""

from dataclasses import replace

from ..model.errors import ValidationError
from ..model.rule import ForwardRule, ForwardType, Rule, UntilReboot
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


def parse_and_bind(
    untrusted_text: str, target: str, topology: Topology, boot_id: str
) -> list[Rule]:
    """A whole firewall.Set payload, all or nothing; an error names its line and field."""
    rules = []
    for line_no, untrusted_line in enumerate(untrusted_text.splitlines(), start=1):
        if not untrusted_line.strip():
            continue
        try:
            rules.append(bind_rule(parse_rule(untrusted_line), target, topology, boot_id))
        except ValidationError as err:
            raise err.at_line(line_no) from None
    return rules
