"""Waiting on a qube's DB watches: an awaitable for asyncio programs, a bounded blocking wait
for dom0's publisher. Both sleep on the watch file descriptor; neither polls."""

import asyncio
import contextlib
import select
import time
from collections.abc import Callable
from typing import TypeVar

from ..ports.qube_db import QubeDb, QubeDbTimeout

T = TypeVar("T")


async def next_watch(
    db: QubeDb, timeout: float | None = None, interrupt: asyncio.Event | None = None
) -> str | None:
    """The path of the next watch that fires; None after `timeout`, on `interrupt`, or when
    the wake concerned no watched path. Never call the same handle from another thread
    meanwhile: QubesDB handles are not thread-safe."""
    loop = asyncio.get_running_loop()
    fd = db.watch_fd()
    readable: asyncio.Future[None] = loop.create_future()

    def _ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, _ready)
    waiters: set[asyncio.Future[object]] = {readable}  # type: ignore[arg-type]
    interrupted = None
    if interrupt is not None:
        interrupted = asyncio.ensure_future(interrupt.wait())
        waiters.add(interrupted)
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fd)
        if interrupted is not None and not interrupted.done():
            interrupted.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await interrupted
    if not readable.done():
        readable.cancel()
        return None
    return db.read_watch()


def wait_until(db: QubeDb, condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """`condition()` once it is not None, re-checked whenever a watch of `db` fires (the
    caller set the watch); QubeDbTimeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise QubeDbTimeout(f"{what}: not within {timeout} s")
        readable, _, _ = select.select([db.watch_fd()], [], [], remaining)
        if readable:
            db.read_watch()
