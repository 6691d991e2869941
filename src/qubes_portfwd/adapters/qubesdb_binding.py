"""A qube's DB through Qubes' own `qubesdb` Python binding (the port `ports.qube_db`).

In a qube `QubesDbBinding()` opens its own DB; in dom0 `QubesDbBinding(name)` opens that
qube's (core-admin's `vm.untrusted_qdb` is the same object). Not yet tested: issue 16 runs
the port's contract suite against real QubesDB daemons over vchan-socket. The binding is
imported when a handle is made, so the product imports without it (the lab, CI).
Caveat of the binding: a watch event that arrives while a command waits for its answer is
queued inside the client library, not signalled on `watch_fd`; our programs therefore
re-read the state they care about after every command sequence, not only on a wake.
"""

import threading

from ..model.db_layout import valid_path


def _checked(path: str) -> str:
    # The daemon answers a bad path with a bare error (EAGAIN from the binding); say which.
    if not valid_path(path):
        raise ValueError(
            f"path {path[:80]!r}: expected /-rooted, under 64 bytes of [A-Za-z0-9/_.:@-]"
        )
    return path


class QubesDbBinding:
    """Calls are serialised: a binding handle is one socket and not thread-safe."""

    def __init__(self, qube: str | None = None) -> None:
        import qubesdb

        self._db = qubesdb.QubesDB(qube) if qube else qubesdb.QubesDB()
        self._lock = threading.Lock()

    def read(self, path: str) -> bytes | None:
        with self._lock:
            value: bytes | None = self._db.read(path)
            return value

    def multiread(self, prefix: str) -> dict[str, bytes]:
        with self._lock:
            return dict(self._db.multiread(prefix) or {})

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(self._db.list(prefix) or [])

    def write(self, path: str, value: bytes) -> None:
        with self._lock:
            self._db.write(_checked(path), value)

    def rm(self, path: str) -> None:
        with self._lock:
            self._db.rm(_checked(path))

    def watch(self, path: str) -> None:
        with self._lock:
            self._db.watch(_checked(path))

    def watch_fd(self) -> int:
        with self._lock:
            return int(self._db.watch_fd())

    def read_watch(self) -> str | None:
        # Not under the lock: it blocks until an event, and is called once watch_fd is
        # readable, from the one thread that waits on it.
        path: str | None = self._db.read_watch()
        return path
