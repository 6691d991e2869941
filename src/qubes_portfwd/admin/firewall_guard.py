"""The service's half of a guarded rule-list write (see model/firewall_revision.py)."""

from collections.abc import Mapping

from ..model.errors import ValidationError
from ..model.firewall_revision import (
    FEATURE_PREFIX,
    BaseRevision,
    digest,
    feature_name,
    is_stale,
)
from .errors import AdminError


class PortfwdRulesChanged(AdminError):
    """A guarded Set whose writer read a list that is no longer the current one."""

    exc_type = "PortfwdRulesChanged"


def check_guarded_set(features: Mapping[str, str], new_text: str, current_text: str) -> None:
    """Refuse a Set whose writer read another list than `current_text`; unguarded ones pass.

    A guard is not consumed by its Set: a second writer that computed the same list from the
    same read must be refused too once the first one changed the list.
    """
    untrusted_value = features.get(feature_name(new_text))
    if untrusted_value is None:
        return
    try:
        read = BaseRevision.parse(untrusted_value).base
    except ValidationError:
        read = ""
    if read != digest(current_text):
        raise PortfwdRulesChanged(
            "rules: the list changed since it was read (another writer); nothing was stored:"
            " read it again and retry"
        )


def stale_guards(features: Mapping[str, str], now: float) -> list[str]:
    return [n for n, v in features.items() if n.startswith(FEATURE_PREFIX) and is_stale(v, now)]
