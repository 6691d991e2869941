"""qvm-firewall's rule words (positional and `key=value`) turned into one Admin API rule.

The words only become a line; `model.rule_text.parse_rule` decides what is valid.
"""

from collections.abc import Sequence

from ..model.errors import ValidationError
from ..model.rule import Rule
from ..model.rule_text import VALUE_CHARS, VALUE_FORM, parse_rule
from .durations import parse_duration

# Qubes' positional order: ACTION [DSTHOST [PROTO [DSTPORTS|ICMPTYPE]]].
FILTER_ORDER = ("action", "dsthost", "proto", "dstports", "icmptype")
# After a positional `forward`: forward TYPE [PROTO [SRCPORTS [DSTPORTS [SRCHOST]]]].
FORWARD_ORDER = ("forwardtype", "proto", "srcports", "dstports", "srchost")
DSTHOST_SPELLINGS = ("dst4", "dst6", "dstname", "dsthost")


def checked_value(field: str, untrusted_value: str) -> str:
    """A value that can sit in a rule line without changing its other options."""
    if not untrusted_value or not set(untrusted_value) <= VALUE_CHARS:
        raise ValidationError(field, f"{untrusted_value!r}: empty or bad value; use {VALUE_FORM}")
    return untrusted_value


def absolute_expire(untrusted_value: str, now: float) -> str:
    """Qubes' `expire=+SECONDS` (here also `+10m` …) becomes a UNIX time; others pass as is."""
    if not untrusted_value.startswith("+"):
        return untrusted_value
    return str(int(now) + parse_duration("expire", untrusted_value[1:]))


def rule_line_from_words(untrusted_words: Sequence[str], now: float) -> str:
    """The Admin API line the words describe (not yet validated as a rule)."""
    options: dict[str, str] = {}
    comment: str | None = None
    expected = list(FILTER_ORDER)
    for untrusted_word in untrusted_words:
        key, has_value, untrusted_value = untrusted_word.partition("=")
        if not has_value:
            if not expected:
                raise ValidationError(
                    "rule", f"{untrusted_word!r}: no field left to fill by position; use key=value"
                )
            key, untrusted_value = expected[0], untrusted_word
        if key == "comment":
            if comment is not None:
                raise ValidationError("comment", "given twice")
            comment = untrusted_value
            continue
        canonical = "dsthost" if key in DSTHOST_SPELLINGS else key
        if canonical in options or (canonical == "dsthost" and "_dsthost" in options):
            raise ValidationError(key, "given twice")
        if key == "expire":
            untrusted_value = absolute_expire(untrusted_value, now)
        value = checked_value(key, untrusted_value)
        options[key] = value
        if canonical == "dsthost":
            options["_dsthost"] = key
        if canonical in expected:
            expected.remove(canonical)
        if key == "action" and value == "forward":
            expected = [k for k in FORWARD_ORDER if k not in options]
        if key == "proto":
            dropped = "icmptype" if value in ("tcp", "udp") else "dstports"
            if value in ("tcp", "udp", "icmp") and dropped in expected:
                expected.remove(dropped)
    parts = [f"{key}={value}" for key, value in options.items() if not key.startswith("_")]
    if comment is not None:
        parts.append(f"comment={comment}")
    return " ".join(parts)


def rule_from_words(untrusted_words: Sequence[str], now: float) -> Rule:
    """Validated rule from qvm-firewall's words; `now` resolves `expire=+SECONDS`."""
    return parse_rule(rule_line_from_words(untrusted_words, now))
