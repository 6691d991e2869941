"""What of ours is live in Qubes' tables, read from `nft -j list ruleset`.

The compiled script deletes our jump rules by handle and adds them again in the same
transaction, so applying twice leaves exactly one jump in each custom chain.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from ..model.errors import ValidationError
from .syntax import BASE_TABLE, CUSTOM_CHAINS, OWNER_COMMENT

_FAMILIES = {"ip": 4, "ip6": 6}
_CUSTOM = frozenset(CUSTOM_CHAINS.values())


@dataclass(frozen=True, order=True)
class OwnedJump:
    """One rule marked as ours in `qubes`' custom-input or custom-forward."""

    family: int
    chain: str
    handle: int


@dataclass(frozen=True)
class OwnedJumps:
    """Our jump rules, and the families whose `qubes` table has both custom chains."""

    jumps: tuple[OwnedJump, ...] = ()
    base_families: frozenset[int] = field(default_factory=lambda: frozenset({4}))


def parse_owned_jumps(untrusted_json: str) -> OwnedJumps:
    """Read `nft -j list ruleset`; any rule commented `qubes-portfwd` in a custom chain is ours."""
    try:
        untrusted_items = json.loads(untrusted_json)["nftables"]
    except (ValueError, KeyError, TypeError):
        raise ValidationError("ruleset", "expected the JSON of `nft -j list ruleset`") from None
    if not isinstance(untrusted_items, list):
        raise ValidationError("ruleset", "expected a list under 'nftables'")
    custom_chains: dict[int, set[str]] = {4: set(), 6: set()}
    jumps = []
    for untrusted_item in untrusted_items:
        if not isinstance(untrusted_item, dict):
            continue
        if "chain" in untrusted_item:
            located = _locate(untrusted_item["chain"], "name")
            if located is not None:
                custom_chains[located[0]].add(located[1])
        elif "rule" in untrusted_item:
            jump = _owned_jump(untrusted_item["rule"])
            if jump is not None:
                jumps.append(jump)
    families = frozenset(f for f, chains in custom_chains.items() if chains == _CUSTOM)
    return OwnedJumps(tuple(sorted(jumps)), families)


def _locate(untrusted: Any, name_key: str) -> tuple[int, str] | None:
    """(family, chain) when the object sits in a custom chain of a `qubes` table."""
    if not isinstance(untrusted, dict) or untrusted.get("table") != BASE_TABLE:
        return None
    family = _FAMILIES.get(untrusted.get("family"))  # type: ignore[arg-type]
    chain = untrusted.get(name_key)
    if family is None or chain not in _CUSTOM:
        return None
    return family, chain


def _owned_jump(untrusted_rule: Any) -> OwnedJump | None:
    located = _locate(untrusted_rule, "chain")
    if located is None or untrusted_rule.get("comment") != OWNER_COMMENT:
        return None
    untrusted_handle = untrusted_rule.get("handle")
    if type(untrusted_handle) is not int or untrusted_handle <= 0:
        raise ValidationError("handle", "expected a positive integer rule handle")
    return OwnedJump(located[0], located[1], untrusted_handle)
