"""Qubes' custom chains as the agent last listed them, reused while nobody committed since.

Every apply needs them (which IP families have Qubes' table, where our jumps are), and
listing them is ~2.3 ms of each level of a change. So the agent lists them again after it
reported (off the path of the change) and the next apply reuses that listing if the
ruleset's generation has not moved since: no transaction, anyone's, came in between.
"""

from dataclasses import dataclass

from ..netlink.generation import ruleset_generation
from .nft_port import NftPort, NftResult


@dataclass(frozen=True)
class _Listing:
    result: NftResult
    generation: int


def _generation() -> int | None:
    try:
        return ruleset_generation()
    except OSError:
        return None


class CustomChains:
    def __init__(self, runner: NftPort) -> None:
        self.runner = runner
        self._kept: _Listing | None = None

    async def listing(self) -> NftResult:
        """The chains as they are now: the kept listing if the ruleset did not change since."""
        kept, self._kept = self._kept, None
        if kept is not None and kept.generation == _generation():
            return kept.result
        return await self.runner.list_custom_chains_json()

    async def list_ahead(self) -> None:
        """List them now for the next apply; kept only if no transaction came during it."""
        before = _generation()
        result = await self.runner.list_custom_chains_json()
        if result.ok and before is not None and before == _generation():
            self._kept = _Listing(result, before)
