"""Loading compiled scripts: in place when only elements and forwards' chains changed.

The full script stays the reference: the in-place transaction is derived from the last
script that loaded and the new one (`nft/delta.py`), and is used only while the kernel
still holds what that load left (our jumps in place, nothing lost since) and only when it
is shorter than the new script. Any refusal of the in-place transaction falls back to the
full script.
"""

import logging

from ..netlink.delta_batch import delta_messages
from ..nft.declared_sets import declared_sets
from ..nft.delta import ScriptParts, delta_script, split_script
from ..nft.owned import OwnedJumps
from ..nft.syntax import CUSTOM_CHAINS
from .gc_pause import collector_paused
from .nft_port import BatchPort, NftPort, NftResult

log = logging.getLogger("qubes_portfwd.agent")


# Up to this size a loaded script is kept split too (at 1,000 forwards an edge's script is
# ~320 kB, its parts ~1 MB, and splitting it again costs ~6 ms of each change); a larger one
# is kept as text alone: at 10,000 forwards the parts were most of the edge agent's memory.
KEEP_PARTS_UP_TO = 1 << 20  # characters of script


class ScriptLoader:
    def __init__(self, runner: NftPort, batches: BatchPort | None = None) -> None:
        self.runner = runner
        self.batches = batches  # small in-place changes straight over netlink, if given
        self._loaded: str | None = None
        self._loaded_parts: ScriptParts | None = None  # of `_loaded`, when it is small
        self.commits = 0  # transactions committed so far: each advances the ruleset generation
        # The last load touched our tables alone (in place, or nothing to do): Qubes' chains,
        # our jumps in them included, are as before it.
        self.left_qubes_chains = False

    def forget(self) -> None:
        """The kernel may no longer hold the last load (rules lost, removed): load whole next."""
        self._loaded = self._loaded_parts = None

    def _remember(self, script: str, parts: ScriptParts | None) -> None:
        self._loaded = script
        self._loaded_parts = parts if len(script) <= KEEP_PARTS_UP_TO else None

    async def load(self, script: str, owned: OwnedJumps) -> NftResult:
        """Load `script`'s rules: all of them or, on any error, none."""
        parts: ScriptParts | None = None
        loaded, loaded_parts = self._loaded, self._loaded_parts
        self.left_qubes_chains = False
        self._loaded = self._loaded_parts = None  # until the kernel holds this one
        if loaded is not None and _one_jump_each(owned):
            with collector_paused():
                previous = split_script(loaded) if loaded_parts is None else loaded_parts
                parts = split_script(script)
                delta = delta_script(previous, parts)
            if delta == "":
                self._remember(script, parts)
                self.left_qubes_chains = True
                return NftResult(True, "")
            # A change bigger than the new script is cheaper whole: the kernel frees our tables
            # at once instead of element by element (8,334 forwards to none: 313 ms in place,
            # 138 ms whole, `nft -f` in a namespace; none to 8,334: 716 against 750 ms).
            if delta is not None and len(delta) < len(script):
                result = await self._apply_in_place(delta, parts)
                if result.ok:
                    self.commits += 1
                    self._remember(script, parts)
                    self.left_qubes_chains = True
                    return result
                log.info("the in-place change was refused (%s); loading whole", result.output)
        result = await self.runner.apply(script)
        if result.ok:
            self.commits += 1
            self._remember(script, parts)  # without parts: split at the next change, if any
        return result

    async def _apply_in_place(self, delta: str, parts: ScriptParts) -> NftResult:
        """Over netlink when every line has a direct form (no libnftables cache fetch: ~3 ms
        of each level of a change), else through libnftables. A failed direct commit is not
        retried in place: whether the kernel took it may be unknown, a whole load settles it."""
        if self.batches is not None:
            messages = delta_messages(delta, declared_sets(parts.skeleton))
            if messages is not None:
                return self.batches.commit(messages)
        return await self.runner.apply(delta)


def _one_jump_each(owned: OwnedJumps) -> bool:
    """Exactly our jumps of the last load: one in each custom chain of each base family."""
    found = sorted((jump.family, jump.chain) for jump in owned.jumps)
    expected = sorted((f, chain) for f in owned.base_families for chain in CUSTOM_CHAINS.values())
    return found == expected
