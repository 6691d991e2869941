"""Change a qube's rule list without losing a concurrent change (model/firewall_revision.py).

Read the list, compute the new one, say which list was read (a guard feature), Set, then
remove the guard; a Set refused because the list changed meanwhile is retried from a fresh
read, a bounded number of times.
"""

import contextlib
import random
import secrets
import time
from collections.abc import Callable

from ..model.errors import ValidationError
from ..model.firewall_revision import BaseRevision, canonical_text, digest, feature_name
from .admin_client import AdminClient
from .connection import QubesdError

RULES_CHANGED = "PortfwdRulesChanged"
MAX_ATTEMPTS = 200
_MAX_BACKOFF = 0.2

Edit = Callable[[list[str]], list[str]]


def update_rules(client: AdminClient, qube: str, edit: Edit) -> list[str]:
    """Apply `edit` to `qube`'s current rule lines and store the result; answers what was stored.

    `edit` may run several times (once per attempt) and may raise ValidationError.
    """
    for attempt in range(MAX_ATTEMPTS):
        lines = [line for line in client.firewall_get(qube) if line.strip()]
        read = canonical_text(lines)
        new_lines = [line for line in edit(list(lines)) if line.strip()]
        new_text = canonical_text(new_lines)
        guard = feature_name(new_text, secrets.token_hex(4))
        client.set_feature(qube, guard, BaseRevision(digest(read), time.time()).format())
        try:
            client.firewall_set(qube, new_lines)
        except QubesdError as err:
            if err.exc_type != RULES_CHANGED:
                raise
            # Another writer won this round; back off a little so rounds do not collide again.
            time.sleep(random.uniform(0, min(_MAX_BACKOFF, 0.005 * 2 ** min(attempt, 6))))
            continue
        finally:
            # Left behind (a dead writer), the service drops it once it is stale.
            with contextlib.suppress(QubesdError, ConnectionError):
                client.remove_feature(qube, guard)
        return new_lines
    raise ValidationError(
        "rules", f"{qube}'s list changed under {MAX_ATTEMPTS} attempts in a row; nothing stored"
    )
