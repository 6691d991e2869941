"""The status an agent writes back: per entry `applied` or why not, and one overall error.

While it puts back rules its kernel lost, the entries it had applied read `repairing`.
"""

from collections.abc import Iterable, Mapping

from ..model.db_layout import STATUS_APPLIED
from ..model.entries import FORWARD_PREFIX
from ..model.forward_status import REPAIRING
from .entries import ParsedEntries


def reported_keys(keys: Iterable[str]) -> list[str]:
    """The keys an agent answers for: its forwards' entries, not the static keys."""
    return sorted(k for k in keys if k.startswith(FORWARD_PREFIX))


def entry_status(
    keys: Iterable[str], parsed: ParsedEntries, apply_error: str | None
) -> dict[str, str]:
    """`applied` for every entry in force; otherwise its own error, or the apply failure."""
    status: dict[str, str] = {}
    for key in reported_keys(keys):
        if key in parsed.errors:
            status[key] = parsed.errors[key]
        elif apply_error is not None:
            status[key] = apply_error
        else:
            status[key] = STATUS_APPLIED
    return status


def overall_error(apply_error: str | None, problems: Iterable[str]) -> str | None:
    parts = ([apply_error] if apply_error else []) + list(problems)
    return "; ".join(parts) or None


def repairing(per_key: Mapping[str, str]) -> dict[str, str]:
    """The last report with every applied entry marked as being put back, errors kept."""
    return {key: REPAIRING if value == STATUS_APPLIED else value for key, value in per_key.items()}
