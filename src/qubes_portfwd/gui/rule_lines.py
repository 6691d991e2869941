"""Editing one forward inside a qube's whole rule list (pure): what `firewall.Set` is sent."""

from collections.abc import Sequence

from ..model.errors import ValidationError
from ..model.rule import ForwardRule, forward_id
from ..model.rule_text import parse_rule


def _is_forward(qube: str, untrusted_line: str, wanted_id: str) -> bool:
    try:
        rule = parse_rule(untrusted_line)
    except ValidationError:
        return False
    return isinstance(rule, ForwardRule) and forward_id(qube, rule) == wanted_id


def replaced_lines(
    untrusted_lines: Sequence[str], qube: str, wanted_id: str, new_line: str
) -> list[str]:
    """The list with the forward `wanted_id` replaced in place by `new_line`."""
    out = []
    found = False
    for untrusted_line in untrusted_lines:
        if not found and _is_forward(qube, untrusted_line, wanted_id):
            out.append(new_line)
            found = True
        else:
            out.append(untrusted_line)
    if not found:
        raise ValidationError("forward", f"{wanted_id} is gone (removed meanwhile?); refresh")
    return out


def outbound_summary(untrusted_lines: Sequence[str]) -> str:
    """Qubes' tab's choice: everything allowed, or limited to the listed rules."""
    filters = [line for line in untrusted_lines if "action=forward" not in line.split()]
    if [line.strip() for line in filters] in ([], ["action=accept"]):
        return "Outgoing connections: all allowed"
    return "Outgoing connections: limited to the rules below (first match decides)"
