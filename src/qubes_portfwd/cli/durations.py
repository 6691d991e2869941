"""Lifetimes as people write them (`30s`, `10m`, `2h`, `1d`) and as they are shown back."""

import re

from ..model.errors import ValidationError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_FORM = "a number with a unit s, m, h or d, such as 30s, 10m, 2h or 1d"
MAX_DURATION = 10 * 366 * 86400
_DURATION_RE = re.compile(r"^([0-9]{1,9})([smhd]?)$")


def parse_duration(field: str, untrusted_text: str) -> int:
    """Seconds in `N[s|m|h|d]` (a bare number is seconds), at least 1, at most ten years."""
    match = _DURATION_RE.match(untrusted_text)
    if match is None:
        raise ValidationError(field, f"{untrusted_text!r} is not {DURATION_FORM}")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]
    if not 1 <= seconds <= MAX_DURATION:
        raise ValidationError(field, f"{untrusted_text!r} is out of range; expected 1s to 3660d")
    return seconds
