"""nftables through libnftables in this process (Debian's and Fedora's `python3-nftables`).

The same library `nft` is built on, so scripts, errors and JSON listings are nft's own; what
goes is a process per call (fork, exec, loading nft: most of an apply's cost with few forwards).
It acts on the network namespace the agent runs in, as `nft` would.
"""

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..heap import release_freed_heap
from .nft_port import CUSTOM_CHAIN_PATHS, NftResult, merge_chain_listings

MODULE_PACKAGE = "python3-nftables"  # what provides the `nftables` module on a template
SCRIPT_NAME = "script"  # where an error's line and column point, as `nft -f FILE` names FILE
T = TypeVar("T")


class NftUnavailable(RuntimeError):
    """libnftables or its Python module cannot be loaded."""


def _module() -> Any:
    try:
        import nftables  # the distribution's module (ctypes over libnftables.so.1)
    except ImportError as err:
        raise NftUnavailable(f"no `nftables` module: install {MODULE_PACKAGE}") from err
    try:
        nftables.Nftables()  # loads libnftables.so.1 once, here, where a failure is clear
    except OSError as err:
        raise NftUnavailable(f"cannot load libnftables: {err}") from err
    return nftables


def _result(rc: int, out: bytes, err: bytes) -> NftResult:
    if rc != 0:
        return NftResult(False, err.decode(errors="replace").strip() or f"libnftables: {rc}")
    return NftResult(True, out.decode(errors="replace"))


class NftLibrary:
    """libnftables from one thread of its own, a fresh context per call.

    A call blocks while the kernel works (a 10,000-forward transaction: about a second): calls
    queue on that thread, the event loop goes on (ctypes releases the GIL for the call). A
    context keeps its cache of the ruleset until freed (about 60 MB at 10,000 forwards), so
    each call gets its own (under a millisecond to make) and the heap is trimmed after, off
    the call's path.
    A call into the kernel over netlink cannot hang as a process could, so there is no
    timeout to kill it with (callers bound their waits).
    """

    def __init__(self) -> None:
        self._nftables = _module()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="libnftables")

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    async def _call(self, work: Callable[[Any], T]) -> T:
        def with_context() -> T:
            context = self._nftables.Nftables()
            try:
                return work(context)
            finally:
                del context  # frees the context and its cache

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, with_context)
        finally:
            # Trimmed on the same thread once the caller has its answer (~0.7 ms after a
            # small load, paid before it otherwise); a next call queues behind it.
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing to trim for
                self._thread.submit(release_freed_heap)

    @staticmethod
    def _run(context: Any, command: str, json_output: bool) -> NftResult:
        """One command, as `nft` runs its arguments."""
        context.set_json_output(json_output)
        # Bytes in, bytes out: the module decodes strictly, and a listing may hold any comment.
        return _result(*context.cmd(command.encode()))

    @staticmethod
    def _load(context: Any, script: str) -> NftResult:
        """A script as `nft -f` loads a file: one transaction.

        Read from a memory file, not a buffer: for a buffer, libnftables 1.0.6 quotes the
        script's first line in an error instead of the failing one.
        """
        fd = os.memfd_create("qubes-portfwd-nft", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as memory:
                memory.write(script.encode())
            path = f"/proc/self/fd/{fd}"
            result = _result(*context.cmd_from_file(path.encode()))
        finally:
            os.close(fd)
        return NftResult(result.ok, result.output.replace(f"{path}:", SCRIPT_NAME + ":"))

    async def apply(self, script: str) -> NftResult:
        """Load `script`: all of it or, on any error, none of it."""
        return await self._call(lambda context: self._load(context, script))

    async def list_ruleset_json(self) -> NftResult:
        return await self._call(lambda context: self._run(context, "list ruleset", True))

    async def list_custom_chains_json(self) -> NftResult:
        """Qubes' custom chains, one `list chain` each (a missing chain fails alone)."""

        def listings(context: Any) -> list[NftResult]:
            return [
                self._run(context, f"list chain {family} {table} {chain}", True)
                for family, table, chain in CUSTOM_CHAIN_PATHS
            ]

        return merge_chain_listings(await self._call(listings))
