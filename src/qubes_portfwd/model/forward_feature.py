"""Where a forward is stored: the feature `portfwd.<id>` of its target qube, value = its line."""

import re

from .errors import ValidationError

PREFIX = "portfwd."
_NAME_RE = re.compile(r"^portfwd\.([0-9a-f]{12})$")
NAME_FORM = "portfwd.<id> (the forward's 12 lowercase hex digits)"


def feature_name(forward_id: str) -> str:
    return f"{PREFIX}{forward_id}"


def is_forward_feature(name: str) -> bool:
    # `portfwd-tunnel`, `portfwd-firewall-base.…` and other settings of ours do not match.
    return name.startswith(PREFIX)


def forward_id_of(untrusted_name: str) -> str:
    """The id a `portfwd.<id>` feature name carries, or a ValidationError naming the form."""
    match = _NAME_RE.match(untrusted_name)
    if match is None:
        raise ValidationError("feature name", f"expected {NAME_FORM}")
    return match.group(1)
