"""A lab of the project's own (`Lab("bn<pid>")`) with its admin service, for measurements 3-5."""

import ipaddress
import json
import os
import select
import subprocess
from dataclasses import dataclass
from pathlib import Path

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

    def wait_for(self, host: str, port: int, timeout: float) -> Arrival:
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"host": host, "port": port, "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout + READY_TIMEOUT)
        if not ready:
            raise BenchError(f"prober: no answer for {host}:{port}")
        untrusted = json.loads(self.process.stdout.readline())
        return Arrival(bool(untrusted["ok"]), float(untrusted["at"]), int(untrusted["attempts"]))


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
