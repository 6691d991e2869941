"""Driving a lab as a user does (the qvm-* CLIs), and reading what each qube's kernel holds."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lab_process import tcp_server
from qubes_lab.builder import Lab
from qubes_lab.tools import module_of
from qubes_portfwd.client import AdminClient, ForwardState, ForwardStatus, HopState
from qubes_portfwd.nft.lookups import slot_names

CLI_TIMEOUT = 60.0
CONNECT_TIMEOUT = 1.0
POLL = 0.01
SERVER_PORT = 8080


@dataclass(frozen=True)
class LabUser:
    lab: Lab

    def cli(self, tool: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """A CLI in its own process, talking to the lab's admin service."""
        env = {**os.environ, "QUBESD_SOCKET": str(self.lab.admin_socket)}
        return subprocess.run(
            [sys.executable, "-m", module_of(tool), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )

    def ok(self, tool: str, *argv: str) -> str:
        done = self.cli(tool, *argv)
        assert done.returncode == 0, f"{tool} {' '.join(argv)}: {done.stderr}"
        return done.stdout

    def refused(self, tool: str, *argv: str) -> str:
        """The one error line of a command that must fail."""
        done = self.cli(tool, *argv)
        assert done.returncode != 0, f"{tool} {' '.join(argv)} was accepted: {done.stdout}"
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        return lines[0]

    def add(self, *argv: str) -> str:
        """`qvm-portfwd add …`; the new forward's id."""
        return self.ok("qvm_portfwd", "add", *argv).strip()

    def forwards(self) -> dict[str, dict[str, Any]]:
        """`qvm-portfwd list --json`, by id."""
        listed = json.loads(self.ok("qvm_portfwd", "list", "--json"))
        return {f["id"]: f for f in listed}

    def client(self) -> AdminClient:
        return AdminClient(self.lab.admin_socket, timeout=CLI_TIMEOUT)

    def status(self, forward_id: str) -> ForwardStatus | None:
        """The forward as the service shows it (the client library: fast enough to poll)."""
        return next((f for f in self.client().forwards() if f.id == forward_id), None)

    def applied(self, forward_id: str, path: list[str]) -> bool:
        """Active, on exactly `path` (outside in), every hop applied."""
        forward = self.status(forward_id)
        if forward is None or forward.state != ForwardState.ACTIVE:
            return False
        hops = [(h.qube, h.state) for h in forward.hops]
        return hops == [(qube, HopState.APPLIED) for qube in path]

    # -- kernels --

    def nat_rules(self, qube: str) -> str:
        """Both families of our NAT table in the qube's kernel ("" when absent)."""
        text = ""
        for family in ("ip", "ip6"):
            done = self.lab.run(
                qube,
                ["nft", "list", "table", family, "qubes-portfwd"],
                capture_output=True,
                text=True,
            )
            text += done.stdout
        return text

    def dnat_in_kernel(self, qube: str, forward_id: str) -> bool:
        """Whether the qube's kernel has the forward's DNAT chain."""
        return f"fwd-{forward_id}" in self.nat_rules(qube)

    def input_allowed(self, qube: str, port: int) -> bool:
        """Whether the target's kernel accepts new flows to `port` (our input set in `qubes`)."""
        listed = ""
        for name in (
            "portfwd-input-allowed",
            "portfwd-input-allowed-any",
            "portfwd-input-allowed-host",
            *slot_names("portfwd-input-allowed"),  # networks with one port: masked hash sets
        ):
            done = self.lab.run(
                qube, ["nft", "list", "set", "ip", "qubes", name], capture_output=True, text=True
            )
            listed += done.stdout
        return f" . {port}" in listed or f" . {port}-" in listed

    def store_keys(self, qube: str) -> list[str]:
        return [k for k in self.lab.store(qube).read()[1] if k.startswith("/qubes-portfwd/")]

    # -- traffic --

    def lan_connects(self, port: int) -> bool:
        """A LAN client reaches the echo server in a qube through the edge's LAN address."""
        outside = self.lab.addresses
        return connect(self.lab, "lan", str(outside.edge_lan4), port) is not None


def connect(lab: Lab, host: str, address: str, port: int) -> str | None:
    """What the echo server answered (the peer it saw), or None if the connection failed."""
    done = lab.run(
        host,
        [
            "socat", "-T", str(CONNECT_TIMEOUT), "-u",
            f"TCP4:{address}:{port},connect-timeout={CONNECT_TIMEOUT}", "STDOUT",
        ],
        capture_output=True, text=True, timeout=CONNECT_TIMEOUT + 5,
    )  # fmt: skip
    reply = done.stdout.strip()
    return reply if done.returncode == 0 and reply else None


@contextmanager
def echo_server(lab: Lab, host: str, port: int = SERVER_PORT) -> Iterator[None]:
    """A TCP server in `host` answering each connection with the peer's address."""
    argv = ["socat", f"TCP-LISTEN:{port},reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR"]
    with tcp_server(lab, host, argv, port):
        yield


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition` held; fails naming `what` after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(POLL)
    return time.monotonic() - start
