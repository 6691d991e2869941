"""Qubes' custom chains as the agent last listed them, reused while nobody committed since.

Every apply needs them (which IP families have Qubes' table, where our jumps are), and
listing them is ~2.3 ms of each level of a change. So the agent lists them again after it
reported (off the path of the change) and the next apply reuses that listing if the
ruleset's generation has not moved since: no transaction, anyone's, came in between.
A load of ours that touched our own tables alone carries the listing it used over to the
generation it left, so the listing after it (~4.5 ms of libnftables, overlapping the next
level of the change on a 2-CPU host) is needed only after whole loads and others' commits.
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
        self._used: _Listing | None = None  # the last listing answered, if its time is known

    async def listing(self) -> NftResult:
        """The chains as they are now: the kept listing if the ruleset did not change since."""
        kept, self._kept, self._used = self._kept, None, None
        before = _generation()
        if kept is not None and kept.generation == before:
            self._used = kept
            return kept.result
        result = await self.runner.list_custom_chains_json()
        if result.ok and before is not None and before == _generation():
            self._used = _Listing(result, before)
        return result

    def carry_over(self, since: int | None, to: int | None) -> bool:
        """After a load of ours that left Qubes' chains alone, from generation `since` to
        `to` with no one else's commit between: the listing used, if taken at `since`,
        still holds at `to` and is kept for the next apply."""
        used, self._used = self._used, None
        if used is None or since is None or to is None or used.generation != since:
            return False
        self._kept = _Listing(used.result, to)
        return True

    async def list_ahead(self) -> None:
        """List them now for the next apply; kept only if no transaction came during it."""
        self._used = None
        before = _generation()
        result = await self.runner.list_custom_chains_json()
        if result.ok and before is not None and before == _generation():
            self._kept = _Listing(result, before)
