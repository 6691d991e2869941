"""One change of the running host's topology at a time, across processes."""

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from .netns import LabCommandError

POLL = 0.02
LOCK_FILE = "topology.lock"


@contextlib.contextmanager
def held(state_dir: Path, timeout: float) -> Iterator[None]:
    """Hold the lab's topology lock (a restart, a re-attach: the admin's hook runs one)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / LOCK_FILE, "a") as lock_file:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabCommandError(
                        f"another restart or re-attach held the lab for {timeout} s"
                    ) from None
                time.sleep(POLL)  # polling interval of a bounded wait
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
