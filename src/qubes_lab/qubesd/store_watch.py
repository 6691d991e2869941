"""The emulated qubesd's watches: the lab's stand-in for QubesDB watches and qubesd's events.

A real dom0 hears of agents' reports through QubesDB watches (core-admin's
`domain-qdb-change`); here every qube's store directory and the boot id file are watched
with inotify, and a change pokes the controller, which re-plans only when what it reads
changed. No timer: an idle lab's qubesd sleeps.
"""

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from qubes_lab.qube_db import inotify_open, read_events, watch_directory
from qubes_portfwd.controller.controller import Controller


class _Watches:
    """Store directories (any file in them counts) and single files (their name only)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.only: dict[int, str | None] = {}  # watch number -> the one file name that counts

    def add(self, path: Path, whole_directory: bool) -> None:
        directory = path if whole_directory else path.parent
        with contextlib.suppress(FileNotFoundError):
            wd = watch_directory(self.fd, directory)
            if whole_directory:
                self.only[wd] = None
            else:
                self.only.setdefault(wd, path.name)

    def relevant(self) -> bool:
        """Whether anything queued concerns a watched store or file (the queue is read)."""
        found = False
        while events := read_events(self.fd):
            found = found or any(self.only.get(wd) in (None, name) for wd, name in events)
        return found


async def poke_on_changes(
    controller: Controller,
    stores: Callable[[], list[Path]],
    files: list[Path],
    stop: asyncio.Event,
) -> None:
    """Until `stop`: poke `controller` after changes in `stores()` or to one of `files`.

    The stores are listed again after each wake, so a qube added meanwhile is watched too."""
    loop = asyncio.get_running_loop()
    fd = inotify_open()
    watches = _Watches(fd)
    woken = asyncio.Event()

    def watch_all() -> None:
        for path in files:
            watches.add(path, whole_directory=False)
        for store in stores():
            watches.add(store, whole_directory=True)

    try:
        watch_all()
        loop.add_reader(fd, woken.set)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waking = asyncio.ensure_future(woken.wait())
                await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                if stop.is_set():
                    return
                woken.clear()
                if watches.relevant():
                    watch_all()
                    controller.poke()
        finally:
            stopping.cancel()
            loop.remove_reader(fd)
    finally:
        os.close(fd)
