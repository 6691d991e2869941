"""A lab of the project's own (`Lab("bn<pid>")`) with its admin service, for measurements 3-5."""

import ipaddress
import json
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient

from .chain import REPO_ROOT, probe_argv
from .processes import BenchError, ProcessSet, wait_until

READY_TIMEOUT = 10.0
TOPOLOGY = Path(__file__).resolve().parent / "topology.toml"
CLIENT_TIMEOUT = 600.0  # a Set of 10,000 forwards waits for every agent


@dataclass(frozen=True)
class Arrival:
    ok: bool
    at: float  # time.monotonic() of the first connection that got the greeting
    attempts: int


class Prober:
    """A long-lived `bench.probe wait` in the lan namespace: no process start per attempt."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._unread = b""

    def wait_for(self, host: str, port: int, timeout: float) -> Arrival:
        self.begin(host, port, timeout)
        return self.arrival(timeout)

    def begin(self, host: str, port: int, timeout: float) -> float:
        """Start attempting `host:port`; returns once attempts run (their monotonic start),
        so what is measured can start after them and be seen as soon as it works."""
        assert self.process.stdin is not None
        request = {"host": host, "port": port, "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        started = self._line(READY_TIMEOUT, f"prober: never started on {host}:{port}")
        return float(started["started"])

    def arrival(self, timeout: float) -> Arrival:
        """The answer to the request begun last."""
        untrusted = self._line(timeout + READY_TIMEOUT, "prober: no answer")
        return Arrival(bool(untrusted["ok"]), float(untrusted["at"]), int(untrusted["attempts"]))

    def _line(self, timeout: float, failure: str) -> dict[str, Any]:
        """The next line, read from the descriptor: two lines can arrive in one read, and a
        buffered reader would hide the second from `select`."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._unread:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise BenchError(failure)
            self._unread += chunk
        line, _, self._unread = self._unread.partition(b"\n")
        return json.loads(line)


class LabSession:
    def __init__(self) -> None:
        self.lab = Lab(f"bn{os.getpid() % 100000}")
        self.processes = ProcessSet()

    def up(self) -> None:
        try:
            self.lab.up(TOPOLOGY)
        except BaseException:
            self.lab.down()
            raise

    def down(self) -> None:
        try:
            self.processes.stop_all()
        finally:
            self.lab.down()

    def client(self) -> AdminClient:
        return AdminClient(self.lab.admin_socket, timeout=CLIENT_TIMEOUT)

    @property
    def lan_network(self) -> str:
        a = self.lab.addresses
        return str(ipaddress.ip_network(f"{a.lan_router4}/{a.lan_prefix4}", strict=False))

    def pid(self, role: str) -> int:
        """The PID of a lab process by its role: `admind`, `agent:<qube>`."""
        for name, pid, running in self.lab.status().processes:
            if name == role and running:
                return pid
        raise BenchError(f"no running {role} in lab {self.lab.name}")

    def running(self) -> dict[str, int]:
        """Every running process the lab lists, by role (admind, agents, natd, workers...)."""
        return {name: pid for name, pid, running in self.lab.status().processes if running}

    def start_server(self, qube: str, port: int) -> None:
        process = self.processes.start(
            [
                "ip",
                "netns",
                "exec",
                self.lab.netns(qube),
                *probe_argv("serve", "--port", str(port)),
            ],
            cwd=str(REPO_ROOT),
        )

        def listening() -> bool:
            out = self.lab.run(
                qube, ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
            )
            return bool(out.stdout.strip())

        wait_until(listening, READY_TIMEOUT, f"server in {qube}:{port} (pid {process.pid})")

    def prober(self) -> Prober:
        argv = ["ip", "netns", "exec", self.lab.netns("lan"), *probe_argv("wait")]
        process = self.processes.start(
            argv, cwd=str(REPO_ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        return Prober(process)  # type: ignore[arg-type]
