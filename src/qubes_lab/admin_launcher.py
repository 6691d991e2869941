"""Start and stop the admin service as a background process (for the lab and tests)."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import processes

POLL_INTERVAL = 0.02
STATUS_FILE_NAME = "status.json"


def status_file_for(socket_path: str | os.PathLike[str]) -> Path:
    """Where the service writes its status document: beside its socket."""
    return Path(socket_path).parent / STATUS_FILE_NAME


class ServiceStartError(RuntimeError):
    """The service exited or did not answer on its socket in time."""


@dataclass(frozen=True)
class AdminProcess:
    pid: int
    socket_path: Path
    start_ticks: int | None = None


def _answers(socket_path: Path) -> bool:
    """True once the service replies to a real request (not just accepts the connection)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(socket_path))
        probe.sendall(b"admin.vm.List+ dom0 name dom0\0")
        probe.shutdown(socket.SHUT_WR)
        return probe.recv(2) in (b"0\0", b"2\0")
    except OSError:
        return False
    finally:
        probe.close()


def start(
    socket_path: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    *,
    lab: str | None = None,
    topology_file: str | os.PathLike[str] | None = None,
    qubesdb_dir: str | os.PathLike[str] | None = None,
    boot_id_file: str | os.PathLike[str] | None = None,
    agent_timeout: float | None = None,
    reconcile_interval: float | None = None,
    admin_group: str | None = None,
    on_netvm_change: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
    status_file: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 15.0,
) -> AdminProcess:
    """Start the lab's qubesd (`python -m qubes_lab.qubesd`) detached; return once it answers."""
    socket_path = Path(socket_path)
    argv = [sys.executable, "-m", "qubes_lab.qubesd", "--socket", str(socket_path)]
    argv += ["--state-dir", str(state_dir), "-v"]
    options = {
        "--lab": lab,
        "--topology": topology_file,
        "--qubesdb-dir": qubesdb_dir,
        "--boot-id-file": boot_id_file,
        "--agent-timeout": agent_timeout,
        "--reconcile-interval": reconcile_interval,
        "--admin-group": admin_group,
        "--on-netvm-change": on_netvm_change,
        "--status-file": status_file,
    }
    for flag, value in options.items():
        if value is not None:
            argv += [flag, str(value)]
    argv += list(extra_args)
    log_file = open(log_path or os.devnull, "ab")  # noqa: SIM115  (handed to the child)
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    finally:
        log_file.close()
    ticks = processes.start_ticks(process.pid)
    deadline = time.monotonic() + timeout
    while not _answers(socket_path):
        if process.poll() is not None:
            raise ServiceStartError(f"admin service exited with {process.returncode}; see log")
        if time.monotonic() >= deadline:
            stop(process.pid, start_ticks=ticks)
            raise ServiceStartError(f"admin service did not answer on {socket_path}")
        time.sleep(POLL_INTERVAL)
    return AdminProcess(process.pid, socket_path, ticks)


def stop(pid: int, timeout: float = 10.0, start_ticks: int | None = None) -> None:
    """SIGTERM, a bounded wait, then SIGKILL; by PID, and only while it is the same process.

    `start_ticks` (from `AdminProcess`) tells our process from a later one with its PID.
    """
    ticks = processes.start_ticks(pid) if start_ticks is None else start_ticks
    if ticks is None:
        return
    processes.stop(processes.TrackedProcess("admind", "", pid, ticks, ""), grace=timeout)
