"""A fingerprint of what the agent owns in the ruleset, to notice when it was lost.

After each apply the agent records the fingerprint; a periodic check compares it with the
live ruleset, so a restart of Qubes' base rules, a flushed chain or a deleted table is
repaired without any change from dom0. Handles and counters are left out: they change
without anyone touching the rules.
"""

import hashlib
import json
import re
from typing import Any

from ..nft.syntax import BASE_TABLE, NAT_TABLE, OWNER_COMMENT

# Never Qubes' `qubes-firewall`: its worker rewrites it, which is no loss of ours.
OWNED_TABLES = frozenset({NAT_TABLE})
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


def _place(kind: str, body: dict[str, Any]) -> tuple[str, str, str, str]:
    """Where an object sits: kind, family, table, and its chain (rules) or name."""
    name = body.get("chain") if kind == "rule" else body.get("name")
    return kind, str(body.get("family")), str(body.get("table")), str(name)


# A volatile key with its number, as `json.dumps` writes it (keys are strings without quotes).
_VOLATILE = re.compile(r'"(?:' + "|".join(sorted(VOLATILE_KEYS)) + r')": \d+(?:, )?')


def owned_fingerprint(untrusted_ruleset_json: str) -> str:
    """A digest of the owned tables, chains, sets and rules in `nft -j list ruleset` output.

    Volatile numbers are cut from the text rather than from the parsed objects: rebuilding
    every nested dict of a 10,000-forward ruleset took most of a second.
    """
    untrusted_objects = json.loads(untrusted_ruleset_json).get("nftables", [])
    owned = []
    for untrusted_object in untrusted_objects:
        if not isinstance(untrusted_object, dict) or len(untrusted_object) != 1:
            continue
        ((kind, body),) = untrusted_object.items()
        if isinstance(body, dict) and _is_owned(kind, body):
            if isinstance(body.get("elem"), list):
                body = {**body, "elem": sorted(body["elem"], key=repr)}
            owned.append((_place(kind, body), {kind: body}))
    # The kernel lists objects in the order they were made, which in-place loads change:
    # only the rules' order within a chain means anything (a stable sort keeps it).
    owned.sort(key=lambda item: item[0])
    text = _VOLATILE.sub("", json.dumps([o for _, o in owned], sort_keys=True))
    return hashlib.sha256(text.encode()).hexdigest()
