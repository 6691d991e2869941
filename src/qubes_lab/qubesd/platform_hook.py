"""A command the platform runs after a qube's netvm changed (the lab re-attaches the qube).

On Qubes, qubesd moves a running qube's network itself; an emulated host needs telling.
The command gets the qube's name as its last argument, runs without a shell, bounded in
time, one at a time; its failure is logged and does not undo the change.
"""

import asyncio
import contextlib
import logging
import shlex
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
OUTPUT_LIMIT = 2000  # characters of the command's output kept in the log


@dataclass(frozen=True)
class NetvmChangeHook:
    argv: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT
    # One at a time: two re-attaches of one host must not interleave.
    _serialized: asyncio.Lock = field(default_factory=asyncio.Lock, compare=False, repr=False)

    @classmethod
    def from_command(cls, command: str, timeout: float = DEFAULT_TIMEOUT) -> "NetvmChangeHook":
        argv = tuple(shlex.split(command))
        if not argv:
            raise ValueError("--on-netvm-change: expected a command, got an empty string")
        return cls(argv, timeout)

    async def run(self, qube: str) -> bool:
        """Run the command for `qube`; whether it succeeded."""
        async with self._serialized:
            return await _run(self, qube)


async def _run(hook: NetvmChangeHook, qube: str) -> bool:
    argv = [*hook.argv, qube]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as err:
        log.error("netvm change of %s: cannot run %s: %s", qube, argv[0], err)
        return False
    try:
        output, _ = await asyncio.wait_for(process.communicate(), hook.timeout)
    except TimeoutError:
        log.error("netvm change of %s: %s ran past %s s; killed", qube, argv[0], hook.timeout)
        return False
    finally:
        if process.returncode is None:  # timed out, or the request was cancelled
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
    text = output.decode("utf-8", "replace").strip()[-OUTPUT_LIMIT:]
    if process.returncode != 0:
        log.error("netvm change of %s: %s exited %d: %s", qube, argv[0], process.returncode, text)
        return False
    log.info("netvm change of %s: %s", qube, text or "done")
    return True
