"""The controller as it lives inside qubesd: host, DB handles, publisher, status, timers.

Events arrive on qubesd's loop thread and only mark work to do (`kick`); re-planning and
publishing run as tasks on that loop, whose blocking parts the controller puts in threads.
"""

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..controller.controller import Controller, boot_id_reader
from ..controller.publisher import Publisher
from ..controller.status_file import StatusWriter
from ..qrexec.nat_service import NAT_SOCKET, serve_nat_requests
from .app_host import AppHost
from .prompt_socket import PROMPT_SOCKET, serve_prompt_requests
from .qube_dbs import Connect, QubeDbs

T = TypeVar("T")
LOOP_CALL_TIMEOUT = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Where the extension keeps its files and how long it waits; from the environment."""

    state_dir: Path
    status_file: Path
    agent_timeout: float
    reconcile_interval: float | None  # None: re-plan on events only (QubesDB watches, expiry)
    boot_id_file: Path
    nat_socket: Path | None  # qubes.PortfwdNat's socket; None: NAT requests not served
    prompt_socket: Path | None  # dom0's prompt answers asks here; None: not served

    @classmethod
    def from_environment(cls) -> "Settings":
        state_dir = Path(os.environ.get("QUBES_PORTFWD_STATE_DIR", "/var/lib/qubes/portfwd"))
        status = os.environ.get("QUBES_PORTFWD_STATUS") or str(state_dir / "status.json")
        return cls(
            state_dir,
            Path(status),
            float(os.environ.get("QUBES_PORTFWD_AGENT_TIMEOUT", "5")),
            _optional_seconds(os.environ.get("QUBES_PORTFWD_RECONCILE_INTERVAL", "")),
            Path(os.environ.get("QUBES_PORTFWD_BOOT_ID_FILE", "/proc/sys/kernel/random/boot_id")),
            _optional_path(os.environ.get("QUBES_PORTFWD_NAT_SOCKET", str(NAT_SOCKET))),
            _optional_path(os.environ.get("QUBES_PORTFWD_PROMPT_SOCKET", str(PROMPT_SOCKET))),
        )


class Runtime:
    def __init__(self, app: Any, settings: Settings, connect: Connect) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.running = {vm.name for vm in app.domains if _running(vm)}
        self.host = AppHost(app, settings.state_dir, self.on_loop)
        self.dbs = QubeDbs(connect, lambda name: name in self.running)
        publisher = Publisher(self.dbs.db_for, settings.agent_timeout)
        self.controller = Controller(
            self.host,
            publisher,
            boot_id_reader(settings.boot_id_file),
            reconcile_interval=settings.reconcile_interval,
        )
        # Set after construction: the first document is written by the first publish, in a
        # thread, instead of reading every qube's DB on qubesd's loop now.
        self.controller.status = StatusWriter(settings.status_file)
        self._dirty = False
        self._worker: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._status_topology: object = None
        self._sockets = {
            path: serve
            for path, serve in (
                (settings.nat_socket, serve_nat_requests),
                (settings.prompt_socket, serve_prompt_requests),
            )
            if path is not None
        }
        self._servers: list[asyncio.AbstractServer] = []
        self._serving: asyncio.Task[None] | None = None

    def on_loop(self, call: Callable[[], T]) -> T:
        """`call()` on qubesd's loop thread (core-admin's objects live there), waited for."""
        if self.loop is None or threading.get_ident() == self._loop_thread:
            return call()
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(call())
            except BaseException as err:
                done.set_exception(err)

        self.loop.call_soon_threadsafe(run)
        return done.result(LOOP_CALL_TIMEOUT)

    def started(self, name: str) -> None:
        self.running.add(name)
        self.dbs.handle(name).started()

    def stopped(self, name: str) -> None:
        self.running.discard(name)
        self.dbs.handle(name).stopped()

    def kick(self) -> None:
        """Re-read the host now and re-plan soon (on qubesd's loop, never blocking it)."""
        try:
            self.host.refresh()
        except Exception:  # never into core-admin's own event (qubes.xml loading, a Set)
            log.exception("portfwd: reading the qubes failed; the next event reads again")
        self._dirty = True
        # The reconciler sleeps until the next expiry it knew: a new rule may end sooner.
        self.controller.rules_changed()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # qubes.xml still loading before qubesd's loop runs: the first event after
        if self.loop is None:
            self.loop, self._loop_thread = loop, threading.get_ident()
        if self._reconciler is None:
            self._reconciler = loop.create_task(self.controller.run_reconciler())
        if self._serving is None:
            self._serving = loop.create_task(self._serve_sockets())
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())

    def _write_status(self) -> None:
        controller = self.controller
        if controller.status is None:
            return
        try:
            current = controller.plan()
            snapshots = controller.publisher.snapshots(sorted(controller.topology.qubes))
            texts = controller.status_texts.texts(current, snapshots)
            topology = controller.topology
            controller.status.write_texts(controller.boot_id(), topology, texts)
            self._status_topology = topology
        except Exception:  # the first publish writes it again
            log.exception("portfwd: writing the first status document failed")

    async def _drain(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                if self._status_topology != self.controller.topology:
                    # Front ends complete a new forward's path from the document: show the
                    # qubes as they are now, before a publish that may wait for agents.
                    async with self.controller.lock:
                        await asyncio.to_thread(self._write_status)
                await self.controller.reconcile()
            except Exception:  # the next event or the periodic reconcile tries again
                log.exception("portfwd: re-planning failed")

    async def _serve_sockets(self) -> None:
        for socket_path, serve in self._sockets.items():
            try:
                self._servers.append(await serve(self.controller, socket_path))
            except Exception:  # forwards go on; NAT requests (or asks) get no answer
                log.exception("portfwd: serving %s failed", socket_path)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for task in (self._worker, self._reconciler, self._serving):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _optional_seconds(value: str) -> float | None:
    """A timer setting: seconds, or empty for none (the extension is woken by events)."""
    return float(value) if value else None


def _optional_path(value: str) -> Path | None:
    """A socket setting: a path, or empty for none (a host without natd, say)."""
    return Path(value) if value else None


def _running(vm: Any) -> bool:
    try:
        return bool(vm.is_running())
    except Exception:  # a qube the VM manager cannot answer for is treated as stopped
        return False
