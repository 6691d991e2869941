"""Dom0's handles on the qubes' QubesDBs, one of our own per qube, following its lifecycle.

A running qube's handle is a fresh connection (made by `connect`, the stock adapter at the
composition root) opened on first use after the qube's QubesDB was created; our watches are
set again on it. A stopped qube has no QubesDB: its handle answers as an empty DB that keeps
what is written to it (nothing acts on it), so a publish waits for it only until its bound.
"""

import os
import threading
from collections.abc import Callable
from typing import Any

from ..ports.qube_db import QubeDb

Connect = Callable[[str], QubeDb]


class _Offline:
    """A stopped qube's DB: writes are kept, watches never fire."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self._read_fd, self._write_fd = os.pipe()  # never written: its reader never wakes

    def read(self, path: str) -> bytes | None:
        return self.values.get(path)

    def multiread(self, prefix: str) -> dict[str, bytes]:
        return {k: v for k, v in self.values.items() if k.startswith(prefix)}

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in self.values if k.startswith(prefix))

    def write(self, path: str, value: bytes) -> None:
        self.values[path] = value

    def rm(self, path: str) -> None:
        for key in [
            k for k in self.values if k == path or (path.endswith("/") and k.startswith(path))
        ]:
            del self.values[key]

    def watch(self, path: str) -> None:
        pass

    def watch_fd(self) -> int:
        return self._read_fd

    def read_watch(self) -> str | None:
        return None

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class QubeDbHandle:
    """The QubeDb port for one qube across its restarts (`started`, `stopped`)."""

    def __init__(self, name: str, connect: Connect, running: bool) -> None:
        self.name = name
        self._connect = connect
        self._lock = threading.RLock()
        self._watches: list[str] = []
        self._running = running
        self._db: QubeDb | None = None
        self._offline = _Offline()
        self._fd_owner: QubeDb | None = None

    def started(self) -> None:
        """The qube got a fresh QubesDB: connect anew on the next call.

        Core-admin also fires `domain-qdb-create` for a running qube whose netvm changed
        (same QubesDB): its connection stays.
        """
        with self._lock:
            if not self._running:
                self._running, self._db = True, None

    def stopped(self) -> None:
        with self._lock:
            self._running, self._db = False, None
            self._offline.close()
            self._offline = _Offline()

    def _current(self) -> QubeDb:
        with self._lock:
            if not self._running:
                return self._offline
            if self._db is None:
                db = self._connect(self.name)
                for path in self._watches:
                    db.watch(path)
                self._db = db
            return self._db

    def _call(self, method: str, *args: Any) -> Any:
        db = self._current()
        try:
            return getattr(db, method)(*args)
        except Exception:
            # A connection whose daemon went away (a restart core-admin did not report):
            # the next call connects anew.
            with self._lock:
                if self._db is db:
                    self._db = None
            raise

    def read(self, path: str) -> bytes | None:
        return self._call("read", path)  # type: ignore[no-any-return]

    def multiread(self, prefix: str) -> dict[str, bytes]:
        return self._call("multiread", prefix)  # type: ignore[no-any-return]

    def list(self, prefix: str) -> list[str]:
        return self._call("list", prefix)  # type: ignore[no-any-return]

    def write(self, path: str, value: bytes) -> None:
        self._call("write", path, value)

    def rm(self, path: str) -> None:
        self._call("rm", path)

    def watch(self, path: str) -> None:
        with self._lock:
            if path not in self._watches:
                self._watches.append(path)
        self._call("watch", path)

    def watch_fd(self) -> int:
        db = self._current()
        with self._lock:
            self._fd_owner = db
        return db.watch_fd()

    def read_watch(self) -> str | None:
        """The fired path, or None when the connection changed since `watch_fd` (a restart):
        reading the new one would wait for an event that was never signalled."""
        db = self._current()
        if db is not self._fd_owner:
            return None
        return db.read_watch()


class QubeDbs:
    """Every qube's handle, made on first use (`db_for` is the publisher's DbFor)."""

    def __init__(self, connect: Connect, is_running: Callable[[str], bool]) -> None:
        self._connect = connect
        self._is_running = is_running
        self._handles: dict[str, QubeDbHandle] = {}
        self._lock = threading.Lock()

    def db_for(self, name: str) -> QubeDb:
        return self.handle(name)

    def handle(self, name: str) -> QubeDbHandle:
        with self._lock:
            handle = self._handles.get(name)
            if handle is None:
                handle = QubeDbHandle(name, self._connect, self._is_running(name))
                self._handles[name] = handle
            return handle
