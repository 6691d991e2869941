"""qvm-portfwd's friendly `add` arguments turned into one `action=forward` rule."""

from dataclasses import dataclass

from ..model.errors import ValidationError
from ..model.rule import ForwardRule, ForwardType
from ..model.rule_text import parse_rule
from .durations import parse_duration
from .rule_words import checked_value

PROTO_CHOICES = ("tcp", "udp", "both")
ANY_SOURCE = "any"
ANY_SOURCE_NETWORK = "0.0.0.0/0"

# Errors from the model name rule keys; the user typed these arguments instead.
ARGUMENT_OF_KEY = {
    "proto": "PROTO",
    "srcports": "OUTSIDE_PORT",
    "dstports": "QUBE_PORT",
    "srchost": "--from",
    "expire": "--for",
    "comment": "--comment",
}


@dataclass(frozen=True)
class ForwardRequest:
    """What `qvm-portfwd add` was asked, still as typed."""

    untrusted_proto: str
    untrusted_ports: str
    forwardtype: ForwardType
    untrusted_sources: str
    untrusted_duration: str | None = None
    until_reboot: bool = False
    untrusted_comment: str | None = None
    follow: bool = False


def _sources(forwardtype: ForwardType, untrusted_sources: str) -> str:
    items = untrusted_sources.split(",")
    if ANY_SOURCE in items:
        if forwardtype == ForwardType.INTERNAL:
            raise ValidationError(
                "--from", "'any' is only for --external; name the qubes that may connect"
            )
        items = [ANY_SOURCE_NETWORK if item == ANY_SOURCE else item for item in items]
    return checked_value("--from", ",".join(items))


def _ports(untrusted_ports: str) -> list[str]:
    outside, has_inside, inside = untrusted_ports.partition(":")
    options = [f"srcports={checked_value('OUTSIDE_PORT', outside)}"]
    if has_inside:
        options.append(f"dstports={checked_value('QUBE_PORT', inside)}")
    return options


def forward_rule_line(request: ForwardRequest, now: float) -> str:
    """The Admin API line of the request; `now` turns `--for` into an absolute expiry."""
    if request.untrusted_proto not in PROTO_CHOICES:
        raise ValidationError("PROTO", f"{request.untrusted_proto!r}; expected tcp, udp or both")
    options = ["action=forward", f"forwardtype={request.forwardtype}"]
    if request.untrusted_proto != "both":
        options.append(f"proto={request.untrusted_proto}")
    options += _ports(request.untrusted_ports)
    options.append(f"srchost={_sources(request.forwardtype, request.untrusted_sources)}")
    if request.follow:
        options.append("follow=yes")
    if request.until_reboot and request.untrusted_duration is not None:
        raise ValidationError("--for", "give either --for DURATION or --until-reboot")
    if request.until_reboot:
        options.append("expire=boot")
    elif request.untrusted_duration is not None:
        seconds = parse_duration("--for", request.untrusted_duration)
        options.append(f"expire={int(now) + seconds}")
    if request.untrusted_comment is not None:
        options.append(f"comment={request.untrusted_comment}")
    return " ".join(options)


def forward_rule(request: ForwardRequest, now: float) -> ForwardRule:
    """The validated forward rule, with errors named after the arguments the user typed."""
    line = forward_rule_line(request, now)
    try:
        rule = parse_rule(line)
    except ValidationError as err:
        raise ValidationError(ARGUMENT_OF_KEY.get(err.field, err.field), err.message) from None
    if not isinstance(rule, ForwardRule):
        raise ValidationError("action", "expected a forward")
    return rule
