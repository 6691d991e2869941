"""What the agent leaves behind when it stops or is uninstalled: nothing of its own.

One nft transaction, built from the live ruleset: our jump rules in Qubes' custom chains
(by handle), our `qubes-portfwd` tables, and our chains and sets inside Qubes' `qubes`
tables. Qubes' own objects, `qubes-firewall` and anything unmarked stay as they are.
"""

import json
from typing import Any

from ..model.errors import ValidationError
from ..nft.owned import parse_owned_jumps
from ..nft.syntax import BASE_TABLE
from .nft_port import NftPort, NftResult
from .owned import OWNED_PREFIXES, OWNED_TABLES

_FAMILIES = ("ip", "ip6")


def _named(untrusted_body: Any) -> tuple[str, str, str] | None:
    """(family, table, name) of a listed object, when all three are plain names."""
    if not isinstance(untrusted_body, dict):
        return None
    family, table, name = (untrusted_body.get(k) for k in ("family", "table", "name"))
    if family not in _FAMILIES or not all(isinstance(v, str) for v in (table, name)):
        return None
    if not all(v.replace("-", "").replace("_", "").isalnum() for v in (table, name)):
        return None  # never quoted into the script: only names we could have made
    return family, table, name


def removal_script(untrusted_ruleset_json: str) -> str:
    """The nft script removing every object of ours in `nft -j list ruleset` output ("" when
    there is none). Raises ValidationError when the listing is not nft's JSON."""
    owned = parse_owned_jumps(untrusted_ruleset_json)
    untrusted_items = json.loads(untrusted_ruleset_json)["nftables"]
    tables: list[str] = []
    flushes: list[str] = []
    chains: list[str] = []
    sets: list[str] = []
    for untrusted_item in untrusted_items:
        if not isinstance(untrusted_item, dict) or len(untrusted_item) != 1:
            continue
        ((kind, untrusted_body),) = untrusted_item.items()
        if kind == "table" and isinstance(untrusted_body, dict):
            family, name = untrusted_body.get("family"), untrusted_body.get("name")
            if family in _FAMILIES and name in OWNED_TABLES:
                tables.append(f"delete table {family} {name}")
            continue
        if kind not in ("chain", "set", "map"):
            continue
        named = _named(untrusted_body)
        if named is None or named[1] != BASE_TABLE or not named[2].startswith(OWNED_PREFIXES):
            continue
        family, table, name = named
        if kind == "chain":
            flushes.append(f"flush chain {family} {table} {name}")
            chains.append(f"delete chain {family} {table} {name}")
        else:
            sets.append(f"delete {kind} {family} {table} {name}")
    jumps = [
        f"delete rule {'ip' if j.family == 4 else 'ip6'} {BASE_TABLE} {j.chain} handle {j.handle}"
        for j in owned.jumps
    ]
    # Jumps before the chains they reach; every rule of ours (flushed) before any chain or
    # set it may use.
    lines = jumps + tables + flushes + chains + sets
    return "\n".join(lines) + "\n" if lines else ""


async def remove_owned(runner: NftPort) -> NftResult:
    """Remove every object of ours from this qube's ruleset, in one transaction."""
    listing = await runner.list_ruleset_json()
    if not listing.ok:
        return NftResult(False, f"nft list ruleset failed: {listing.output}")
    try:
        script = removal_script(listing.output)
    except ValidationError as err:
        return NftResult(False, f"nft list ruleset: {err}")
    if not script:
        return NftResult(True, "")
    result = await runner.apply(script)
    if not result.ok:
        return NftResult(False, f"nft -f failed: {result.output}")
    return result
