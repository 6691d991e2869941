"""Long-running lab processes: started inside a namespace, tracked and stopped by PID only."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import netns

STOP_GRACE = 3.0  # seconds a process gets to exit after SIGTERM before SIGKILL
POLL = 0.02


@dataclass(frozen=True)
class TrackedProcess:
    """A process the lab started; `start_ticks` tells a reused PID from ours.

    `argv` (what ran inside `netns`) is how a restart knows the options it was started with.
    """

    role: str
    netns: str
    pid: int
    start_ticks: int
    log: str
    argv: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "argv": list(self.argv)}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> "TrackedProcess":
        return cls(
            role=str(document["role"]),
            netns=str(document["netns"]),
            pid=int(document["pid"]),
            start_ticks=int(document["start_ticks"]),
            log=str(document["log"]),
            argv=tuple(str(arg) for arg in document.get("argv", [])),
        )


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces; the fields after it start past the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def is_running(process: TrackedProcess) -> bool:
    """True while our process lives (a zombie or a reused PID counts as gone)."""
    fields = _stat_fields(process.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == process.start_ticks


# Popen objects of children started by this Python process, so their exit status is reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(role: str, netns_name: str, argv: Sequence[str], log_path: Path) -> TrackedProcess:
    """Start argv inside netns in its own session, output to log_path; it outlives the caller."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            netns.exec_argv(netns_name, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[child.pid] = child
    ticks = start_ticks(child.pid)
    if ticks is None:
        child.wait(timeout=STOP_GRACE)
        raise netns.LabCommandError(f"{role}: exited at once; see {log_path}")
    return TrackedProcess(role, netns_name, child.pid, ticks, str(log_path), tuple(argv))


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    # A child started elsewhere in this process (e.g. by the admin launcher): collect it too.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(process: TrackedProcess, deadline: float) -> bool:
    while True:
        _reap(process.pid)
        if not is_running(process):
            # It may have turned zombie just after the reap: collect it now.
            child = _children.pop(process.pid, None)
            if child is not None:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def stop(process: TrackedProcess, grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL; only if the PID is still ours."""
    if not is_running(process):
        _reap(process.pid)
        return
    try:
        os.kill(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(process, time.monotonic() + grace):
        return
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not _wait_gone(process, time.monotonic() + grace):
        raise netns.LabCommandError(f"{process.role} (pid {process.pid}) survived SIGKILL")


def option(process: TrackedProcess, flag: str) -> str | None:
    """The value given to `flag` when `process` was started (None if it was not given)."""
    argv = process.argv
    return next((argv[i + 1] for i in range(len(argv) - 1) if argv[i] == flag), None)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition()` until true; LabCommandError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise netns.LabCommandError(f"{what}: not ready within {timeout} s")
        time.sleep(POLL)
