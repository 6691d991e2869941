"""A fingerprint of what the agent owns in the ruleset, to notice when it was lost.

After each apply the agent records the fingerprint; a periodic check compares it with the
live ruleset, so a restart of Qubes' base rules, a flushed chain or a deleted table is
repaired without any change from dom0. Handles and counters are left out: they change
without anyone touching the rules.
"""

import hashlib
import json
from typing import Any

from ..nft.syntax import BASE_TABLE, FIREWALL_TABLE, NAT_TABLE, OWNER_COMMENT

OWNED_TABLES = frozenset({NAT_TABLE, FIREWALL_TABLE})
# Inside Qubes' own `qubes` table, what the compiler adds carries one of these prefixes.
OWNED_PREFIXES = ("portfwd-", "fwd-")
VOLATILE_KEYS = frozenset({"handle", "packets", "bytes"})


def _is_owned(kind: str, body: dict[str, Any]) -> bool:
    table = body.get("table") if kind != "table" else body.get("name")
    if table in OWNED_TABLES:
        return True
    if table != BASE_TABLE:
        return False
    if kind == "rule":
        return (
            str(body.get("chain", "")).startswith(OWNED_PREFIXES)
            or body.get("comment") == OWNER_COMMENT
        )
    return kind in ("chain", "set", "map") and str(body.get("name", "")).startswith(OWNED_PREFIXES)


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def owned_fingerprint(untrusted_ruleset_json: str) -> str:
    """A digest of the owned tables, chains, sets and rules in `nft -j list ruleset` output."""
    untrusted_objects = json.loads(untrusted_ruleset_json).get("nftables", [])
    owned = []
    for untrusted_object in untrusted_objects:
        if not isinstance(untrusted_object, dict) or len(untrusted_object) != 1:
            continue
        ((kind, body),) = untrusted_object.items()
        if isinstance(body, dict) and _is_owned(kind, body):
            owned.append({kind: _without_volatile(body)})
    text = json.dumps(owned, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
