"""A pending NAT traversal request as the prompt shows it, and the "allow always" policy (pure)."""

from collections.abc import Sequence
from dataclasses import dataclass

from ..model.errors import ValidationError
from ..model.hosts import is_qube_name

MAX_DESCRIPTION = 200


@dataclass(frozen=True)
class PendingAsk:
    id: str
    qube: str
    via: str
    proto: str
    port: int
    internal_port: int
    lifetime: int
    origin: str
    description: str
    expires_in: int


def _number(fields: dict[str, str], key: str, low: int, high: int) -> int:
    untrusted_value = fields.get(key, "")
    if not (untrusted_value.isascii() and untrusted_value.isdigit() and len(untrusted_value) < 10):
        raise ValidationError(key, f"{untrusted_value[:20]!r}; expected a number")
    value = int(untrusted_value)
    if not low <= value <= high:
        raise ValidationError(key, f"{value} is out of range; expected {low}-{high}")
    return value


def _name(fields: dict[str, str], key: str) -> str:
    untrusted_value = fields.get(key, "")
    if not is_qube_name(untrusted_value):
        raise ValidationError(key, "expected a qube name")
    return untrusted_value


def _printable(untrusted_text: str, limit: int) -> str:
    """Text safe to show: printable characters only, bounded (the asking qube wrote it)."""
    return "".join(c if c.isprintable() else "?" for c in untrusted_text[:limit])


def parse_pending(untrusted_fields: dict[str, str]) -> PendingAsk:
    """One `admin.portfwd.Pending` line's fields, checked."""
    untrusted_id = untrusted_fields.get("id", "")
    if not (len(untrusted_id) == 8 and all(c in "0123456789abcdef" for c in untrusted_id)):
        raise ValidationError("id", "expected 8 lowercase hex digits")
    proto = untrusted_fields.get("proto", "")
    if proto not in ("tcp", "udp"):
        raise ValidationError("proto", "expected tcp or udp")
    return PendingAsk(
        id=untrusted_id,
        qube=_name(untrusted_fields, "qube"),
        via=_name(untrusted_fields, "via"),
        proto=proto,
        port=_number(untrusted_fields, "port", 0, 65535),
        internal_port=_number(untrusted_fields, "internal-port", 0, 65535),
        lifetime=_number(untrusted_fields, "lifetime", 0, 10**8),
        origin=_printable(untrusted_fields.get("origin", ""), 20),
        description=_printable(untrusted_fields.get("description", ""), MAX_DESCRIPTION),
        expires_in=_number(untrusted_fields, "expires-in", 0, 10**8),
    )


def duration_text(seconds: int) -> str:
    """`90 seconds`, `5 minutes`, `2 hours`, `1 day 3 hours` (rounded down)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{value} {unit}{'' if value == 1 else 's'}"
        for value, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (secs, "second"))
        if value
    ]
    return " ".join(parts[:2]) or "0 seconds"


def question(ask: PendingAsk) -> str:
    """The prompt's sentence."""
    port = f"{ask.proto.upper()} port {ask.port}"
    inside = "" if ask.internal_port == ask.port else f" (to its port {ask.internal_port})"
    return (
        f"{ask.qube} asks {ask.via} to open {port}{inside} to the outside, "
        f"for {duration_text(ask.lifetime)}."
    )


def always_policy(current: Sequence[str], port: int) -> list[str]:
    """The qube's NAT policy with `port` allowed first (the first matching line decides)."""
    allow = f"ports={port} action=allow"
    kept = [line for line in current if line.strip() and not line.startswith(f"ports={port} ")]
    return [allow, *kept]
