"""Core-admin with our extension, each qube's namespace, and our agent in every qube."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from qubes_lab.core_admin import StockQubesd
from qubes_lab.qubesdb_real import RealQubesDB
from qubes_portfwd.client.admin_client import AdminClient
from qubes_portfwd.client.status_reader import StatusUnavailable, read_status

WAIT = 60.0  # every wait on the host is bounded by this
T = TypeVar("T")


@dataclass
class StockHost:
    """Core-admin with our extension, each qube's namespace and our agent in every qube."""

    workdir: Path
    names: dict[str, str]
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    real: RealQubesDB | None = None
    started: StockQubesd | None = None

    @property
    def qubesd(self) -> StockQubesd:
        assert self.started is not None, "core-admin is not started yet"
        return self.started

    def start_agents(self, real: RealQubesDB) -> None:
        """Our agent in every qube, before core-admin starts (as a qube's boot does)."""
        self.real = real
        for qube in self.names:
            self.start_agent(qube)

    def start_agent(self, qube: str) -> None:
        assert self.real is not None
        side = self.real.qubes[qube]
        runtime = self.workdir / "agents" / qube
        runtime.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "qubes_portfwd.agent", "--qube", qube,
                "--runtime-dir", str(runtime)]  # fmt: skip
        log = open(self.workdir / f"agent-{qube}.log", "ab")  # noqa: SIM115
        self.agents[qube] = subprocess.Popen(
            side.command(argv), env=dict(side.env), stdout=log, stderr=log
        )

    def stop_agent(self, qube: str) -> None:
        """End the agent itself (nsenter forks it into the qube's PID namespace), by PID."""
        launcher = self.agents.pop(qube)
        side = None if self.real is None else self.real.qubes.get(qube)
        for pid in [] if side is None else side.sandbox.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"qubes_portfwd.agent" in cmdline and not cmdline.startswith(b"nsenter"):
                os.kill(pid, signal.SIGTERM)
        try:
            launcher.wait(10)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait(10)

    def client(self) -> AdminClient:
        """Our own client on the same socket (and the extension's status document)."""
        return AdminClient(self.qubesd.socket_path, status_path=self.qubesd.status_file)

    def entries(self, qube: str) -> dict[str, str]:
        """What `qube` reads under `/qubes-portfwd` from its own QubesDB, inside the qube."""
        done = self.qubesd.qube(qube).run(["qubesdb-multiread", "/qubes-portfwd"])
        assert done.returncode == 0, done.stderr
        found = {}
        for line in done.stdout.splitlines():
            path, _, value = line.partition(" = ")
            found["/qubes-portfwd" + path] = value
        return found

    def qubes_in_status(self) -> set[str]:
        try:
            return set(read_status(self.qubesd.status_file).qubes)
        except StatusUnavailable:
            return set()

    def hops(self, forward_id: str) -> dict[str, str]:
        """Each hop's state in the extension's status document (empty until written)."""
        try:
            document = read_status(self.qubesd.status_file)
        except StatusUnavailable:
            return {}
        return {
            hop.qube: hop.state.value
            for forward in document.forwards
            if forward.id == forward_id
            for hop in forward.hops
        }

    def wait_until(self, check: Callable[[], T], wanted: T) -> T:
        """`check()` once it equals `wanted`, or its last answer after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while (found := check()) != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        return found

    def wait_hops(self, forward_id: str, wanted: dict[str, str]) -> dict[str, str]:
        return self.wait_until(lambda: self.hops(forward_id), wanted)
