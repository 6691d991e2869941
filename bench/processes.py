"""Processes the bench starts: tracked by PID, stopped with their descendants, bounded waits."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

STOP_GRACE = 3.0
POLL = 0.01


class BenchError(RuntimeError):
    """A step of the bench failed; the message says which and why."""


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition()` until true; BenchError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not reached within {timeout} s")
        time.sleep(POLL)


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(p) for p in text.split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below pid, depth first."""
    found = []
    for child in children(pid):
        found.append(child)
        found += descendants(child)
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class ProcessSet:
    """Every process started through it is stopped by `stop_all`, also after a failure."""

    def __init__(self) -> None:
        self._running: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        process: subprocess.Popen[bytes] = subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload]
        self._running[process.pid] = process
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the process and its descendants (socat's forks), SIGKILL after grace."""
        self._running.pop(process.pid, None)
        below = descendants(process.pid)
        for pid in [process.pid, *below]:
            _signal(pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_GRACE)
        deadline = time.monotonic() + STOP_GRACE
        for pid in below:
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(POLL)
            if Path(f"/proc/{pid}").exists():
                _signal(pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for process in reversed(list(self._running.values())):
            self.stop(process)
