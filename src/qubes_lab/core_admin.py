"""Qubes' real core-admin hosting our dom0 extension, beside real QubesDB daemons.

`StockQubesd.start` starts real QubesDB (dom0's side and one qube side per running qube, each
in its mount namespace), then `qubes_lab.stock_qubesd` in dom0's namespace with core-admin
(pinned sources, its package metadata so its entry points load), qrexec's Python package,
the real `qubesdb` binding and core-admin's libvirt stubs on the path. Our extension comes in
by its own `qubes.ext` entry point (this interpreter's installed `qubes_portfwd` metadata).
"""

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .qubesdb_real import QubeSide, RealQubesDB
from .upstream import source_tree

CORE_ADMIN = "qubes-core-admin"
QREXEC = "qubes-core-qrexec"
START_TIMEOUT = 120.0
COMMAND_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def _metadata(tree: Path) -> Path:
    """`egg_info` of `tree` into a folder beside it (the unpacked tree stays as verified)."""
    folder = tree.parent / f"{tree.name}-metadata"
    if not any(folder.glob("*.egg-info")):
        folder.mkdir(exist_ok=True)
        subprocess.run(
            [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(folder)],
            cwd=tree,
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
    return folder


def python_path(real: RealQubesDB) -> list[str]:
    """Real binding first (core-admin's test-packages hold a stub of it), then core-admin
    and its metadata, qrexec, and the test-packages (libvirt stubs)."""
    core = source_tree(CORE_ADMIN)
    qrexec = source_tree(QREXEC)
    return [
        str(real.build.python_dir),
        str(core),
        str(_metadata(core)),
        str(qrexec),
        str(core / "test-packages"),
    ]


@dataclass
class StockQubesd:
    """The running child, its real QubesDB, and a JSON command channel on its stdin."""

    real: RealQubesDB
    process: subprocess.Popen[str]
    socket_path: Path
    workdir: Path
    env: dict[str, str]
    domids: dict[str, int] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)
    spec: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        workdir: Path,
        spec: Sequence[dict[str, Any]],
        netns: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        before_qubesd: Callable[[RealQubesDB], None] | None = None,
    ) -> "StockQubesd":
        """Start QubesDB for every qube of `spec` (domid = position + 1), then
        `before_qubesd` (the qubes' own programs), then core-admin."""
        real = RealQubesDB.start(workdir / "qubesdb")
        try:
            domids = {}
            for position, qube in enumerate(spec, start=1):
                name = qube["name"]
                real.add_qube(name, position, netns=(netns or {}).get(name))
                domids[name] = position
            if before_qubesd is not None:
                before_qubesd(real)
            child_env = {
                **real.env(0),
                "PYTHONPATH": ":".join(python_path(real)),
                "QUBES_PORTFWD_STATE_DIR": str(workdir / "portfwd"),
                "QUBES_PORTFWD_STATUS": str(workdir / "portfwd" / "status.json"),
                # qubes.PortfwdNat's socket: the workdir's, never the host's /run.
                "QUBES_PORTFWD_NAT_SOCKET": str(workdir / "nat.sock"),
                "QUBES_PORTFWD_PROMPT_SOCKET": str(workdir / "prompt.sock"),
                **(env or {}),
            }
            process = _spawn(real, workdir, spec, child_env, load=False)
        except BaseException:
            real.stop()
            raise
        running = cls(real, process, workdir / "qubesd.sock", workdir, child_env, domids)
        running.spec = list(spec)
        try:
            running.ready = running._read(START_TIMEOUT)
        except BaseException:
            running.stop()
            raise
        return running

    def restart_qubesd(self) -> None:
        """qubesd restarts (the qubes and their QubesDB stay): qubes.xml is loaded again."""
        self._stop_child()
        self.process = _spawn(self.real, self.workdir, self.spec, self.env, load=True)
        self.ready = self._read(START_TIMEOUT)

    @property
    def nat_socket(self) -> Path:
        return Path(self.env["QUBES_PORTFWD_NAT_SOCKET"])

    @property
    def prompt_socket(self) -> Path:
        return Path(self.env["QUBES_PORTFWD_PROMPT_SOCKET"])

    @property
    def status_file(self) -> Path:
        return Path(self.env["QUBES_PORTFWD_STATUS"])

    def log(self) -> str:
        return (self.workdir / "stock_qubesd.log").read_text(errors="replace")[-6000:]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"core-admin child silent for {timeout} s:\n{self.log()}")
            readable, _, _ = select.select([self.process.stdout], [], [], remaining)
            if readable:
                line = self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"core-admin child ended:\n{self.log()}")
                document: dict[str, Any] = json.loads(line)
                return document

    def command(self, verb: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"verb": verb, **fields}) + "\n")
        self.process.stdin.flush()
        reply = self._read(COMMAND_TIMEOUT)
        if not reply.get("ok"):
            raise RuntimeError(f"{verb}: {reply.get('error')}")
        return reply

    def qube(self, name: str) -> QubeSide:
        return self.real.qubes[name]

    def restart_qubesdb(self, name: str) -> QubeSide:
        """The qube's QubesDB daemons end and fresh ones start (a reboot of the qube)."""
        old = self.real.qubes.pop(name)
        old.sandbox.stop()
        for pid in self.real.dom0.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[-2:-1] == [name.encode()] and cmdline[0].endswith(b"qubesdb-daemon"):
                os.kill(pid, 15)
                _wait_gone(pid)
        return self.real.add_qube(name, old.domid, netns=old.netns)

    def stop(self) -> None:
        self._stop_child()
        self.real.stop()

    def _stop_child(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def _spawn(
    real: RealQubesDB,
    workdir: Path,
    spec: Sequence[dict[str, Any]],
    env: dict[str, str],
    *,
    load: bool,
) -> subprocess.Popen[str]:
    """The core-admin child in dom0's namespace; its log appends to `stock_qubesd.log`."""
    running = [q["name"] for q in spec if q["name"] in real.qubes]
    argv = [
        sys.executable, "-m", "qubes_lab.stock_qubesd",
        "--workdir", str(workdir / "core"), "--socket", str(workdir / "qubesd.sock"),
        "--spec", json.dumps(list(spec)), "--running", *running,
    ]  # fmt: skip
    if load:
        argv.append("--load")
    with open(workdir / "stock_qubesd.log", "a") as log:
        return subprocess.Popen(
            real.dom0_command(argv),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
