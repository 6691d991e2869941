"""The real admin service as its own process on a temp state, for data-safety tests."""

import json
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qubes_lab import admin_launcher as launcher
from qubes_lab.qubesd.topology_json import topology_to_json
from qubes_portfwd.client import AdminClient
from qubes_portfwd.model.topology import Qube, Topology

BOOT_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"
TARGET = "work"


def topology() -> Topology:
    return Topology.of(
        Qube("sys-net", 2, provides_network=True),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True),
        Qube(TARGET, 6, netvm="sys-firewall"),
    )


def filter_lines(generation: int, count: int) -> list[str]:
    """`count` accept rules, all different from every other generation's."""
    return [
        f"action=accept dst4=10.{n // 250 % 250}.{n % 250}.{generation % 250}/32 proto=tcp "
        f"dstports={1 + n % 60000}-{1 + n % 60000} comment=generation {generation} rule {n}"
        for n in range(count)
    ]


def forward_line(generation: int) -> str:
    return (
        f"action=forward forwardtype=external proto=tcp srcports={10000 + generation} "
        f"srchost=192.0.2.0/24 follow=yes comment=added {generation}"
    )


@dataclass
class AdmindFiles:
    """A temp state dir, entry stores and topology for one admin service."""

    root: Path
    socket_path: Path = field(init=False)
    state_dir: Path = field(init=False)
    qubesdb_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.socket_path = self.root / "s.sock"
        self.state_dir = self.root / "state"
        self.qubesdb_dir = self.root / "qubesdb"
        (self.root / "topology.json").write_text(json.dumps(topology_to_json(topology())))
        (self.root / "boot_id").write_text(BOOT_ID + "\n")

    def argv_options(self) -> dict[str, object]:
        return {
            "topology_file": self.root / "topology.json",
            "qubesdb_dir": self.qubesdb_dir,
            "boot_id_file": self.root / "boot_id",
            "agent_timeout": 0.05,
            "reconcile_interval": 30,
            "log_path": self.root / "admind.log",
        }

    def start(self, *extra_args: str) -> launcher.AdminProcess:
        return launcher.start(
            self.socket_path,
            self.state_dir,
            extra_args=("--no-qube-sockets", *extra_args),
            **self.argv_options(),  # type: ignore[arg-type]
        )

    def firewall_xml(self, qube: str = TARGET) -> Path:
        return self.state_dir / "qubes" / qube / "firewall.xml"

    def client(self) -> AdminClient:
        return AdminClient(self.socket_path, timeout=30)


def kill_hard(pid: int) -> None:
    """SIGKILL by PID, then reap it (launcher.stop waits, bounded)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    launcher.stop(pid, timeout=5.0)


class Call(threading.Thread):
    """One client call in the background; its outcome (reply or exception) is kept."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._call = call
        self.outcome: object = None

    def run(self) -> None:
        try:
            self.outcome = self._call()
        except Exception as err:  # the service was killed under it: expected
            self.outcome = err
