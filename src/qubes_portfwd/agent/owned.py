"""What the agent owns in the ruleset, to notice when someone else changed it.

The kernel's notifications name each changed object: `change_weight` tells a change to the
agent's own objects from one to the Qubes tables and chains it hooks into, and from anything
else. So a restart of Qubes' base rules, a flushed chain or a deleted table is repaired
without any change from dom0 and without listing the ruleset. Without notifications, the
agent records a fingerprint of what it owns after each apply and a periodic check compares
it with the live ruleset (handles and counters left out: they change without anyone
touching the rules).
"""

import hashlib
import json
import re
from typing import Any

from ..netlink.transactions import NFT_MSG_NEWRULE, TABLE_MESSAGES, ObjectChange
from ..nft.syntax import BASE_TABLE, CUSTOM_CHAINS, NAT_TABLE, OWNER_COMMENT

# Never Qubes' `qubes-firewall`: its worker rewrites it, which is no loss of ours.
OWNED_TABLES = frozenset({NAT_TABLE})
# Inside Qubes' own `qubes` table, what the compiler adds carries one of these prefixes.
OWNED_PREFIXES = ("portfwd-", "fwd-")
VOLATILE_KEYS = frozenset({"handle", "packets", "bytes"})
HOOK_CHAINS = frozenset(CUSTOM_CHAINS.values())  # Qubes' chains that hold our jumps
# How much someone else's change concerns the agent: not at all; Qubes' table or the chains
# holding our jumps (look whether the jumps are still there, or whether a table that was
# missing came back); our own objects (repair).
UNRELATED, HOOKS, OURS = 0, 1, 2


def change_weight(change: ObjectChange) -> int:
    """What one notified change means to the agent; an unnamed object counts as ours."""
    table, name = change.table, change.name
    if table is None or name is None:
        return OURS
    if table in OWNED_TABLES or (table == BASE_TABLE and name.startswith(OWNED_PREFIXES)):
        return OURS
    if table != BASE_TABLE:
        return UNRELATED
    if change.message in TABLE_MESSAGES:
        return HOOKS
    if name in HOOK_CHAINS:
        # A rule added beside our jump leaves it as it was; anything else may have taken it.
        return UNRELATED if change.message == NFT_MSG_NEWRULE else HOOKS
    return UNRELATED


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
