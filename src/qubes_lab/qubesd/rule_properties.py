"""A rule as firewall.xml `<property>` values, both ways.

Reading goes through the Admin API text parser, so a rule the API refuses can never be
loaded from a file either.
"""

from collections.abc import Sequence

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import FilterRule, ForwardRule, Rule
from qubes_portfwd.model.rule_text import VALUE_CHARS, VALUE_FORM, parse_rule

# Qubes saves properties sorted by (order, name), comment included; that puts comment and
# expire right after action. Keeping its order makes a Qubes-written file re-save identical.
FILTER_PROPERTIES = (
    "action",
    "comment",
    "expire",
    "dsthost",
    "proto",
    "specialtarget",
    "dstports",
    "icmptype",
)
FORWARD_PROPERTIES = (
    "action",
    "forwardtype",
    "proto",
    "srcports",
    "dstports",
    "srchost",
    "via",
    "follow",
    "expire",
    "comment",
)
PROPERTY_NAMES = frozenset(FILTER_PROPERTIES + FORWARD_PROPERTIES)
_KNOWN_NAMES = ", ".join(sorted(PROPERTY_NAMES))
_SHOWN_NAME_LENGTH = 40


def rule_from_properties(untrusted_properties: Sequence[tuple[str, str]]) -> Rule:
    """Validate (name, value) pairs as one Admin API line with the comment last."""
    options: list[str] = []
    comment: str | None = None
    for untrusted_name, untrusted_value in untrusted_properties:
        if untrusted_name not in PROPERTY_NAMES:
            shown = untrusted_name[:_SHOWN_NAME_LENGTH]
            raise ValidationError(
                "property", f"{shown!r} is not a rule property; known: {_KNOWN_NAMES}"
            )
        name = untrusted_name
        if name == "comment":
            if comment is not None:
                raise ValidationError("comment", "given twice")
            comment = untrusted_value
            continue
        # A space or '=' here would smuggle another option into the line.
        if not untrusted_value or not set(untrusted_value) <= VALUE_CHARS:
            raise ValidationError(name, f"empty or bad value; use {VALUE_FORM}")
        options.append(f"{name}={untrusted_value}")
    if comment is not None:
        options.append(f"comment={comment}")
    return parse_rule(" ".join(options))


def located(err: ValidationError, where: str) -> ValidationError:
    """The same error, saying where in the file it is."""
    return ValidationError(err.field, f"{err.message} ({where})")


def rule_properties(rule: Rule) -> list[tuple[str, str]]:
    """The (name, value) pairs Qubes would save for this rule (ports as `443` or `80-90`)."""
    if isinstance(rule, ForwardRule):
        return _forward_properties(rule)
    return _filter_properties(rule)


def _filter_properties(rule: FilterRule) -> list[tuple[str, str]]:
    values = {
        "action": str(rule.action),
        "comment": rule.comment,
        "expire": None if rule.expire is None else rule.expire.text,
        "dsthost": None if rule.dsthost is None else rule.dsthost.text,
        "proto": rule.proto,
        "specialtarget": rule.specialtarget,
        "dstports": None if rule.dstports is None else rule.dstports.short,
        "icmptype": None if rule.icmptype is None else str(rule.icmptype),
    }
    return [(name, values[name]) for name in FILTER_PROPERTIES if values[name] is not None]


def _forward_properties(rule: ForwardRule) -> list[tuple[str, str]]:
    values = {
        "action": str(rule.action),
        "forwardtype": str(rule.forwardtype),
        "proto": rule.proto,
        "srcports": rule.srcports.short,
        "dstports": rule.dstports.short,
        "srchost": ",".join(str(source) for source in rule.srchost),
        "via": None if rule.via is None else ",".join(rule.via),
        "follow": "yes" if rule.follow else None,
        "expire": None if rule.expire is None else rule.expire.text,
        "comment": rule.comment,
    }
    return [(name, values[name]) for name in FORWARD_PROPERTIES if values[name] is not None]
