"""A real admin service on a temp socket, a temp topology and entry stores, and a stand-in
for the agents (no root): the suite's one, for the service's, the CLIs' and the ports' tests."""

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from qubes_lab import admin_launcher as launcher
from qubes_lab.entry_store import EntryStore, StoreTimeout
from qubes_lab.qubesd.__main__ import build_service, parse_args, start_tasks
from qubes_lab.qubesd.server import Server
from qubes_lab.qubesd.topology_json import topology_to_json
from qubes_portfwd.client import AdminClient
from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.model.topology import Qube, Topology

BOOT_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds (a bound, not a measure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def small_topology() -> Topology:
    """Two network qubes behind sys-net, two app qubes behind sys-firewall, one offline."""
    v6 = {"ipv6": "1"}
    return Topology.of(
        Qube("sys-net", 2, provides_network=True, features=v6),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True, features=v6),
        Qube("work", 6, netvm="sys-firewall", features=v6),
        Qube("personal", 7, netvm="sys-firewall", features=v6),
        Qube("other-net", 4, netvm="sys-net", provides_network=True),
        Qube("vault", 10),
    )


class ThreadedService:
    """The service's event loop in a background thread, started and stopped synchronously."""

    def __init__(
        self,
        service: Controller,
        socket_path: Path,
        stores_root: Path,
        boot_id_file: Path,
        qube_sockets: Iterable[str] = (),
    ) -> None:
        self.service = service
        self.stores_root = stores_root
        self.boot_id_file = boot_id_file
        self.server = Server(service, socket_path, request_timeout=2.0, qubes=qube_sockets)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[asyncio.Task[object]] = []

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)

    async def _start(self) -> None:
        await self.server.start()
        stop = asyncio.Event()  # never set: `_stop` cancels every task
        self.tasks = await start_tasks(self.service, self.stores_root, self.boot_id_file, stop)

    async def _stop(self) -> None:
        await self.server.close()
        # Connection handlers still running end here too, not with the loop.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@dataclass
class RunningService:
    tmp: Path
    socket_path: Path
    state_dir: Path
    qubesdb_dir: Path
    boot_id_file: Path
    agent_timeout: float
    reconcile_interval: float | None = None  # None: woken by the watches only
    process: launcher.AdminProcess | None = None
    _runner: "ThreadedService | None" = None

    def start(self, qube_sockets: Iterable[str] = ()) -> None:
        """In a thread of this process: fast, and the service code runs under coverage. The
        qrexec stand-in sockets of `qube_sockets` are served too."""
        argv = [
            "--socket", str(self.socket_path),
            "--state-dir", str(self.state_dir),
            "--topology", str(self.tmp / "topology.json"),
            "--qubesdb-dir", str(self.qubesdb_dir),
            "--boot-id-file", str(self.boot_id_file),
            "--agent-timeout", str(self.agent_timeout),
        ]  # fmt: skip
        if self.reconcile_interval is not None:
            argv += ["--reconcile-interval", str(self.reconcile_interval)]
        service, socket_path, stores_root = build_service(parse_args(argv))
        self._runner = ThreadedService(
            service, socket_path, stores_root, self.boot_id_file, qube_sockets
        )
        self._runner.start()

    def start_process(self) -> None:
        """As its own process, the way the lab runs it."""
        self.process = launcher.start(
            self.socket_path,
            self.state_dir,
            topology_file=self.tmp / "topology.json",
            qubesdb_dir=self.qubesdb_dir,
            boot_id_file=self.boot_id_file,
            agent_timeout=self.agent_timeout,
            reconcile_interval=self.reconcile_interval,
            log_path=self.tmp / "admind.log",
            status_file=self.status_file,
        )

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self.process is not None:
            launcher.stop(self.process.pid)
            self.process = None

    def client(self) -> AdminClient:
        return AdminClient(self.socket_path, timeout=30)

    def store(self, qube: str) -> EntryStore:
        return EntryStore(self.qubesdb_dir / qube)

    def firewall_xml(self, qube: str) -> Path:
        return self.state_dir / "qubes" / qube / "firewall.xml"

    @property
    def status_file(self) -> Path:
        return self.tmp / "status.json"


def exchange(path: Path, data: bytes, *, half_close: bool = True, timeout: float = 10) -> bytes:
    """Raw bytes to a service socket; everything it answered until it closed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        # The refusal of an oversized request may already be on its way.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()


def make_service(
    tmp_path: Path, agent_timeout: float, reconcile_interval: float | None = None
) -> RunningService:
    (tmp_path / "topology.json").write_text(json.dumps(topology_to_json(small_topology())))
    (tmp_path / "boot_id").write_text(BOOT_ID + "\n")
    # A short socket path: AF_UNIX paths are limited to 108 bytes.
    return RunningService(
        tmp=tmp_path,
        socket_path=tmp_path / "s.sock",
        state_dir=tmp_path / "state",
        qubesdb_dir=tmp_path / "qubesdb",
        boot_id_file=tmp_path / "boot_id",
        agent_timeout=agent_timeout,
        reconcile_interval=reconcile_interval,
    )


class StandInAgent:
    """Plays the agents' side of the entry stores: reports every key applied, or a failure.

    For tests of the service's ordering and status logic without namespaces; the lab tests
    run the real agents.
    """

    def __init__(
        self,
        stores: dict[str, EntryStore],
        verdict: Callable[[str, str], str],
        on_removal: Callable[[str, str], None] | None = None,
    ) -> None:
        self.stores = stores
        self.verdict = verdict
        self.on_removal = on_removal  # (qube, key) the moment the agent sees the key gone
        self.first_seen: list[tuple[str, str]] = []
        self.removed: list[tuple[str, str]] = []
        self.paused: set[str] = set()  # qubes whose agent is busy: their changes wait
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "StandInAgent":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        handled = dict.fromkeys(self.stores, 0)
        seen: set[tuple[str, str]] = set()
        present: dict[str, set[str]] = {q: set() for q in self.stores}
        while not self._stop.is_set():
            for qube, store in self.stores.items():
                if qube in self.paused:
                    continue
                try:
                    generation = store.wait_for_change(handled[qube], timeout=0.05)
                except StoreTimeout:
                    continue
                _, entries = store.read()
                for key in sorted(present[qube] - set(entries)):
                    self.removed.append((qube, key))
                    if self.on_removal is not None:
                        self.on_removal(qube, key)
                present[qube] = set(entries)
                for key in sorted(entries):
                    if (qube, key) not in seen:
                        seen.add((qube, key))
                        self.first_seen.append((qube, key))
                per_key = {k: self.verdict(qube, k) for k in entries}
                store.write_status(generation, per_key, None)
                handled[qube] = generation


def simulate_reboot(boot_id_file: Path, boot_id: str) -> None:
    """The host's boot id changes, in one rename: the service reads it at any moment, and a
    truncated file would read as an empty id (which /proc never shows)."""
    staged = boot_id_file.with_name(boot_id_file.name + ".new")
    staged.write_text(f"{boot_id}\n")
    os.replace(staged, boot_id_file)
