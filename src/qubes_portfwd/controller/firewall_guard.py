"""The service's half of a guarded rule-list write (see model/firewall_revision.py)."""

from collections.abc import Mapping

from ..model.errors import ValidationError
from ..model.firewall_revision import (
    FEATURE_PREFIX,
    BaseRevision,
    digest,
    guard_prefix,
    is_stale,
)
from .errors import AdminError


class PortfwdRulesChanged(AdminError):
    """A guarded Set whose writer read a list that is no longer the current one."""

    exc_type = "PortfwdRulesChanged"


def check_guarded_set(features: Mapping[str, str], new_text: str, current_text: str) -> None:
    """Refuse a Set whose guards were all written from another list than `current_text`.

    A Set with no guard is a stock writer's and passes. One guard written from the current
    list is enough: that writer's result keeps every change it read.
    """
    prefix = guard_prefix(new_text)
    read = [_read_base(v) for n, v in features.items() if n.startswith(prefix)]
    if read and digest(current_text) not in read:
        raise PortfwdRulesChanged(
            "rules: the list changed since it was read (another writer); nothing was stored:"
            " read it again and retry"
        )


def _read_base(untrusted_value: str) -> str:
    try:
        return BaseRevision.parse(untrusted_value).base
    except ValidationError:
        return ""


def stale_guards(features: Mapping[str, str], now: float) -> list[str]:
    return [n for n, v in features.items() if n.startswith(FEATURE_PREFIX) and is_stale(v, now)]
