"""The agent's seam to nftables: load a script as one transaction, list the ruleset as JSON.

Two implementations: `NftLibrary` (libnftables in this process, what the agent runs) and
`NftRunner` (the `nft` program, kept for the lab's firewall worker and the benchmarks).
Beside them, `BatchPort` commits small in-place changes straight over netlink
(`nft_netlink.NetlinkBatches`, in the agent's own namespace).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..netlink.nft_encode import Message
from ..nft.syntax import BASE_TABLE, CUSTOM_CHAINS

# Qubes' custom chains, as (family, table, chain): what the compiler needs before an apply.
CUSTOM_CHAIN_PATHS = tuple(
    (family, BASE_TABLE, chain) for family in ("ip", "ip6") for chain in CUSTOM_CHAINS.values()
)


@dataclass(frozen=True)
class NftResult:
    ok: bool
    output: str


class BatchPort(Protocol):
    def commit(self, messages: list[Message]) -> NftResult:
        """Commit nf_tables messages as one transaction: all of them or, on any error, none."""
        ...


class NftPort(Protocol):
    async def apply(self, script: str) -> NftResult:
        """Load `script`: all of it or, on any error, none of it."""
        ...

    async def list_ruleset_json(self) -> NftResult:
        """The whole ruleset as `nft -j list ruleset` prints it."""
        ...

    async def list_custom_chains_json(self) -> NftResult:
        """Qubes' custom chains (our jumps, with handles) as one `nftables` JSON document;
        a chain that does not exist is left out, as a full listing would show it."""
        ...


def merge_chain_listings(results: Iterable[NftResult]) -> NftResult:
    """One document from one `list chain` per custom chain (failed ones: no such chain)."""
    items: list[object] = []
    for result in results:
        if not result.ok:
            continue
        try:
            untrusted_items = json.loads(result.output)["nftables"]
        except (ValueError, KeyError, TypeError):
            return NftResult(False, "nft -j list chain printed no nftables document")
        if not isinstance(untrusted_items, list):
            return NftResult(False, "nft -j list chain printed no list of objects")
        items += [i for i in untrusted_items if "metainfo" not in i]
    return NftResult(True, json.dumps({"nftables": items}))
