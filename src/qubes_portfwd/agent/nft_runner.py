"""`nft` as a process: the subprocess `NftPort`, for the lab's firewall worker and benchmarks.

The agent itself talks to libnftables in-process (`nft_library.py`): no process per call.
"""

import asyncio
import contextlib

from .nft_port import CUSTOM_CHAIN_PATHS, NftResult, merge_chain_listings

__all__ = ["NftResult", "NftRunner"]

NFT = "nft"
APPLY_TIMEOUT = 60.0  # 10,000 forwards load in well under a second; this only bounds a hang
LIST_TIMEOUT = 20.0


class NftRunner:
    """`nft` as a subprocess; `argv_prefix` lets tests run it elsewhere (e.g. `ip netns exec`)."""

    def __init__(self, argv_prefix: tuple[str, ...] = ()) -> None:
        self.argv_prefix = argv_prefix

    async def _run(self, args: tuple[str, ...], stdin: str | None, timeout: float) -> NftResult:
        process = await asyncio.create_subprocess_exec(
            *self.argv_prefix,
            NFT,
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                process.communicate(None if stdin is None else stdin.encode()), timeout
            )
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            return NftResult(
                False, err.decode(errors="replace").strip() or f"nft exited {process.returncode}"
            )
        return NftResult(True, out.decode(errors="replace"))

    async def apply(self, script: str) -> NftResult:
        """Load `script` with `nft -f -`: all of it or, on any error, none of it."""
        try:
            return await self._run(("-f", "-"), script, APPLY_TIMEOUT)
        except TimeoutError:
            return NftResult(False, f"nft -f did not finish within {APPLY_TIMEOUT} s")

    async def list_ruleset_json(self) -> NftResult:
        try:
            return await self._run(("-j", "list", "ruleset"), None, LIST_TIMEOUT)
        except TimeoutError:
            return NftResult(False, f"nft -j list ruleset did not finish within {LIST_TIMEOUT} s")

    async def list_custom_chains_json(self) -> NftResult:
        """Qubes' custom chains (our jumps, with handles) as one `nft -j list ruleset` document.

        What the compiler needs before an apply, at a fraction of a full listing's cost (with
        10,000 forwards: 0.1 s instead of 1.5 s). A chain that does not exist is left out,
        which is what a full listing would show too.
        """
        calls = [
            self._run(("-j", "list", "chain", *path), None, LIST_TIMEOUT)
            for path in CUSTOM_CHAIN_PATHS
        ]
        try:
            results = await asyncio.gather(*calls)
        except TimeoutError:
            return NftResult(False, f"nft -j list chain did not finish within {LIST_TIMEOUT} s")
        return merge_chain_listings(results)
