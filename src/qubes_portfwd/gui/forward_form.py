"""The add/edit dialog's fields as typed, checked field by field with the model's messages.

Pure: no Qt here, so the rules of the form are unit-tested without a display.
"""

from dataclasses import dataclass, field, replace
from enum import StrEnum

from ..model.errors import ValidationError
from ..model.ports import parse_port_range
from ..model.rule import ExpireAt, ForwardRule, ForwardType, UntilReboot
from ..model.rule_text import COMMENT_CHARS, VALUE_CHARS, VALUE_FORM, parse_rule

PROTO_CHOICES = ("tcp", "udp", "both")
ANY_SOURCE = "any"
ANY_SOURCE_NETWORK = "0.0.0.0/0"
MAX_MINUTES = 10 * 366 * 24 * 60  # the CLI's ten-year bound on --for


class Expiry(StrEnum):
    NEVER = "never"
    UNTIL_REBOOT = "until reboot"
    FOR_MINUTES = "for N minutes"


# The form's fields, and which one each rule key's error belongs next to.
OUTSIDE_PORTS = "outside_ports"
QUBE_PORTS = "qube_ports"
SOURCES = "sources"
MINUTES = "minutes"
COMMENT = "comment"
GENERAL = "general"
FIELD_OF_KEY = {
    "srcports": OUTSIDE_PORTS,
    "dstports": QUBE_PORTS,
    "srchost": SOURCES,
    "expire": MINUTES,
    "comment": COMMENT,
}


@dataclass(frozen=True)
class ForwardForm:
    """The dialog's values, still as typed."""

    forwardtype: ForwardType = ForwardType.EXTERNAL
    proto: str = "tcp"
    untrusted_outside_ports: str = ""
    untrusted_qube_ports: str = ""
    untrusted_sources: str = ANY_SOURCE
    expiry: Expiry = Expiry.NEVER
    minutes: int = 60
    untrusted_comment: str = ""
    follow: bool = False
    via: tuple[str, ...] | None = None  # kept from the rule being edited


@dataclass(frozen=True)
class FormCheck:
    """Either the rule line to send, or a message for each field that is wrong."""

    line: str | None
    errors: dict[str, str] = field(default_factory=dict)


def _checked(field_name: str, untrusted_value: str) -> str:
    if not untrusted_value or not set(untrusted_value) <= VALUE_CHARS:
        raise ValidationError(
            field_name, f"{untrusted_value!r}: empty or bad value; use {VALUE_FORM}"
        )
    return untrusted_value


def _sources(form: ForwardForm) -> str | None:
    """The srchost value, with `any` spelled as the CLI spells it; None when left empty."""
    items = [item.strip() for item in form.untrusted_sources.split(",") if item.strip()]
    if not items:
        return None
    if ANY_SOURCE in items:
        if form.forwardtype == ForwardType.INTERNAL:
            raise ValidationError(
                "srchost", "'any' is only for external forwards; name the qubes that may connect"
            )
        items = [ANY_SOURCE_NETWORK if item == ANY_SOURCE else item for item in items]
    return _checked("srchost", ",".join(items))


def _minutes(form: ForwardForm) -> int:
    if not 1 <= form.minutes <= MAX_MINUTES:
        raise ValidationError("expire", f"{form.minutes} minutes; expected 1 to {MAX_MINUTES}")
    return form.minutes


def _comment(form: ForwardForm) -> str | None:
    text = form.untrusted_comment.strip()
    if text and not set(text) <= COMMENT_CHARS:
        raise ValidationError("comment", f"use {VALUE_FORM} and spaces")
    return text or None


def form_line(form: ForwardForm, now: float) -> str:
    """The Admin API line of the form (not yet parsed); the first wrong field raises."""
    options = ["action=forward", f"forwardtype={form.forwardtype}"]
    if form.proto not in PROTO_CHOICES:
        raise ValidationError("proto", f"{form.proto!r}; expected tcp, udp or both")
    if form.proto != "both":
        options.append(f"proto={form.proto}")
    options.append(f"srcports={_checked('srcports', form.untrusted_outside_ports.strip())}")
    if form.untrusted_qube_ports.strip():
        options.append(f"dstports={_checked('dstports', form.untrusted_qube_ports.strip())}")
    sources = _sources(form)
    if sources is not None:
        options.append(f"srchost={sources}")
    if form.follow:
        options.append("follow=yes")
    elif form.via:
        options.append("via=" + ",".join(form.via))
    if form.expiry == Expiry.UNTIL_REBOOT:
        options.append("expire=boot")
    elif form.expiry == Expiry.FOR_MINUTES:
        options.append(f"expire={int(now) + _minutes(form) * 60}")
    comment = _comment(form)
    if comment is not None:
        options.append(f"comment={comment}")
    return " ".join(options)


def _field_error(err: ValidationError) -> tuple[str, str]:
    return FIELD_OF_KEY.get(err.field, GENERAL), err.message


def _each_field_alone(form: ForwardForm) -> dict[str, str]:
    """Errors of fields that can be judged on their own, so every wrong field says so."""
    errors: dict[str, str] = {}
    for key, untrusted_text in (
        ("srcports", form.untrusted_outside_ports.strip()),
        ("dstports", form.untrusted_qube_ports.strip()),
    ):
        if key == "dstports" and not untrusted_text:
            continue
        try:
            parse_port_range(key, _checked(key, untrusted_text))
        except ValidationError as err:
            errors[FIELD_OF_KEY[key]] = err.message
    try:
        sources = _sources(form)
        probe = f"action=forward forwardtype={form.forwardtype} srcports=1"
        parse_rule(probe if sources is None else f"{probe} srchost={sources}")
    except ValidationError as err:
        errors[SOURCES] = err.message
    for check in (_minutes, _comment):
        try:
            check(form)
        except ValidationError as err:
            errors.setdefault(*_field_error(err))
    return errors


def check_form(form: ForwardForm, now: float) -> FormCheck:
    """The line to send, or what is wrong next to each field (the CLI's messages)."""
    if form.expiry != Expiry.FOR_MINUTES:
        form = replace(form, minutes=1)
    errors = _each_field_alone(form)
    if errors:
        return FormCheck(None, errors)
    try:
        line = form_line(form, now)
        rule = parse_rule(line)
    except ValidationError as err:
        return FormCheck(None, dict([_field_error(err)]))
    if not isinstance(rule, ForwardRule):
        return FormCheck(None, {GENERAL: "not a forward rule"})
    return FormCheck(line)


def form_of_rule(rule: ForwardRule, now: float) -> ForwardForm:
    """The form showing an existing forward, for editing it."""
    expiry, minutes = Expiry.NEVER, 60
    if isinstance(rule.expire, UntilReboot):
        expiry = Expiry.UNTIL_REBOOT
    elif isinstance(rule.expire, ExpireAt):
        expiry = Expiry.FOR_MINUTES
        minutes = max(1, -(-int(rule.expire.timestamp - now) // 60))
    sources = [str(s) for s in rule.srchost]
    return ForwardForm(
        forwardtype=rule.forwardtype,
        proto=rule.proto or "both",
        untrusted_outside_ports=rule.srcports.short,
        untrusted_qube_ports="" if rule.dstports == rule.srcports else rule.dstports.short,
        untrusted_sources=",".join(ANY_SOURCE if s == ANY_SOURCE_NETWORK else s for s in sources),
        expiry=expiry,
        minutes=minutes,
        untrusted_comment=rule.comment or "",
        follow=rule.follow,
        via=rule.via,
    )
