"""The lab's stand-in for a qube's QubesDB: a directory on the host that dom0's side and the
qube's side open alike (the lab has no vchan). The lab's adapter of `qubes_portfwd.ports.qube_db`.

The DB is an append-only log (`log`): each write or rm is one record appended under an
fcntl lock, so a key costs one small append, not a rewrite of the whole document (the bench
publishes 10,000 entries into one qube), and concurrent writers never lose an update. Each
handle replays the log incrementally into memory. When the log grows well past the live data
it is rewritten (temp + rename) under the lock; handles notice the new inode and reload.
`watch_fd` is an inotify descriptor on the directory (ctypes on libc: three calls, no
dependency worth adding), so waiting costs nothing until a writer appends.
"""

import bisect
import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from qubes_portfwd.model.db_layout import MAX_VALUE, valid_path

LOG_FILE = "log"
LOCK_FILE = "lock"
COMPACT_MIN_BYTES = 1 << 20  # below this the log is never rewritten
COMPACT_FACTOR = 3  # rewritten once it holds this many times the live data

_IN_MODIFY = 0x00000002
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def inotify_open() -> int:
    """A non-blocking inotify descriptor with no watches yet."""
    fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1 failed")
    return fd


def watch_directory(fd: int, directory: Path) -> int:
    """Wake `fd` on every write, creation or rename into `directory`; the watch's number
    (the same again for a directory already watched)."""
    mask = _IN_MODIFY | _IN_MOVED_TO | _IN_CREATE
    wd = _libc.inotify_add_watch(fd, os.fsencode(directory), mask)
    if wd < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"inotify_add_watch {directory} failed")
    return int(wd)


def read_events(fd: int) -> list[tuple[int, str]]:
    """What is queued on `fd`, as (watch number, file name) pairs; [] when nothing is."""
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return []
    events = []
    position = 0
    while position + _EVENT.size <= len(data):
        wd, _mask, _cookie, length = _EVENT.unpack_from(data, position)
        raw = data[position + _EVENT.size : position + _EVENT.size + length]
        events.append((wd, raw.rstrip(b"\0").decode(errors="replace")))
        position += _EVENT.size + length
    return events


def _inotify_fd(directory: Path) -> int:
    fd = inotify_open()
    try:
        watch_directory(fd, directory)
    except OSError:
        os.close(fd)
        raise
    return fd


def _signature(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_ino, status.st_size, status.st_mtime_ns


def _write_record(path: str, value: bytes) -> bytes:
    return b"W %s %d\n%s\n" % (path.encode("ascii"), len(value), value)


def _rm_record(path: str) -> bytes:
    return b"R %s\n" % path.encode("ascii")


def _fires(watch: str, path: str) -> bool:
    """QubesDB's rule: a watch ending in `/` matches a prefix, any other the exact path."""
    return path.startswith(watch) if watch.endswith("/") else path == watch


def _check_path(path: str) -> None:
    if not valid_path(path):
        raise ValueError(
            f"path {path[:80]!r}: expected /-rooted, under 64 bytes of [A-Za-z0-9/_.:@-]"
        )


class FileQubeDb:
    """One handle on the DB under `path` (created on first use). Safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._log = self.path / LOG_FILE
        self._mutex = threading.RLock()
        self._state: dict[str, bytes] = {}
        # The keys of `_state` in order, as QubesDB keeps its entries: a prefix read or remove
        # finds its keys by bisection, not by looking at every key of a store of thousands.
        self._keys: list[str] = []
        self._inode: int | None = None
        self._offset = 0
        self._live = 0
        self._seen: tuple[int, int, int] | None = None  # the log's stat at the last replay
        self._watches: set[str] = set()
        self._fired: dict[str, None] = {}  # ordered, each path once: bounded by the keys
        self._inotify: int | None = None
        self._lock_fd: int | None = None
        self._writer: tuple[int, int] | None = None  # (descriptor, inode) of the log

    def close(self) -> None:
        with self._mutex:
            for fd in (self._inotify, self._lock_fd, self._writer and self._writer[0]):
                if fd is not None:
                    os.close(fd)
            self._inotify = self._lock_fd = self._writer = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- reading the log ----------------------------------------------------------------

    def _sync(self) -> None:
        """Replay what writers appended since the last look; fire matching watches."""
        # Most reads find nothing new: one stat says so, without opening the log. The
        # signature is taken before each read, so an append after it always differs.
        try:
            if _signature(os.stat(self._log)) == self._seen:
                return
        except FileNotFoundError:
            pass
        self._seen = None
        try:
            with open(self._log, "rb") as log:
                status = os.fstat(log.fileno())
                inode = status.st_ino
                self._seen = _signature(status)
                if inode != self._inode:
                    # First sight of the log, or it was rewritten: what differs fires.
                    previous = self._state
                    self._state, self._keys, self._offset, self._live = {}, [], 0, 0
                    self._inode = inode
                    self._replay(log.read(), fire=False)
                    changed = set(previous) ^ set(self._state)
                    changed |= {k for k, v in self._state.items() if previous.get(k) != v}
                    for key in sorted(changed):
                        self._fire(key)
                    return
                log.seek(self._offset)
                self._replay(log.read(), fire=True)
        except FileNotFoundError:
            if self._inode is not None:
                for key in self._state:
                    self._fire(key)
            self._state, self._keys, self._inode, self._offset, self._live = {}, [], None, 0, 0

    def _replay(self, data: bytes, fire: bool) -> None:
        position = 0
        while True:
            end = data.find(b"\n", position)
            if end < 0:
                break
            header = data[position:end].split(b" ")
            path = header[1].decode("ascii")
            if header[0] == b"W":
                length = int(header[2])
                if end + 1 + length + 1 > len(data):
                    break  # a writer is still appending this record
                value = data[end + 1 : end + 1 + length]
                old = self._state.get(path)
                self._live += len(path) + len(value) - (0 if old is None else len(path) + len(old))
                self._state[path] = value
                if old is None:
                    bisect.insort(self._keys, path)
                position = end + 1 + length + 1
            else:
                if path.endswith("/"):
                    first, past = self._span(path)
                    for key in self._keys[first:past]:
                        self._live -= len(key) + len(self._state.pop(key))
                    del self._keys[first:past]
                elif path in self._state:
                    self._live -= len(path) + len(self._state.pop(path))
                    del self._keys[bisect.bisect_left(self._keys, path)]
                position = end + 1
            if fire:
                self._fire(path)
        self._offset += position

    def _span(self, prefix: str) -> tuple[int, int]:
        """Where the keys starting with `prefix` are in `_keys`."""
        keys = self._keys
        first = end = bisect.bisect_left(keys, prefix)
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return first, end

    def _fire(self, path: str) -> None:
        if any(_fires(watch, path) for watch in self._watches):
            self._fired[path] = None

    # -- the port -----------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        with self._mutex:
            self._sync()
            return self._state.get(path)

    def multiread(self, prefix: str) -> dict[str, bytes]:
        with self._mutex:
            self._sync()
            first, end = self._span(prefix)
            return {k: self._state[k] for k in self._keys[first:end]}

    def list(self, prefix: str) -> list[str]:
        with self._mutex:
            self._sync()
            first, end = self._span(prefix)
            return self._keys[first:end]

    def write(self, path: str, value: bytes) -> None:
        _check_path(path)
        if not isinstance(value, bytes) or len(value) > MAX_VALUE or b"\0" in value:
            raise ValueError(f"value of {path}: bytes without NUL, at most {MAX_VALUE}")
        self._append(_write_record(path, value))

    def rm(self, path: str) -> None:
        _check_path(path)
        self._append(_rm_record(path))

    def watch(self, path: str) -> None:
        _check_path(path)
        with self._mutex:
            self._sync()  # what was written before the watch does not fire it
            self._watches.add(path)
            self.watch_fd()

    def watch_fd(self) -> int:
        with self._mutex:
            if self._inotify is None:
                self._inotify = _inotify_fd(self.path)
            return self._inotify

    def read_watch(self) -> str | None:
        """The next fired path, or None when the wake concerned no watched path."""
        with self._mutex:
            fd = self.watch_fd()
            with contextlib.suppress(BlockingIOError):
                while os.read(fd, 65536):
                    pass
            self._sync()
            if not self._fired:
                return None
            path = next(iter(self._fired))
            del self._fired[path]
            return path

    # -- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The writers' lock held; yields a descriptor appending to the current log."""
        with self._mutex:
            if self._lock_fd is None:
                self._lock_fd = os.open(
                    self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                )
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield self._append_fd()
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _append_fd(self) -> int:
        """Kept open between writes; reopened once another handle rewrote the log."""
        try:
            inode = os.stat(self._log).st_ino
        except FileNotFoundError:
            inode = None
        if self._writer is not None and self._writer[1] != inode:
            os.close(self._writer[0])
            self._writer = None
        if self._writer is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(self._log, flags, 0o644)
            self._writer = (fd, os.fstat(fd).st_ino)
        return self._writer[0]

    def _append(self, record: bytes) -> None:
        with self._locked() as log:
            os.write(log, record)
            size = os.fstat(log).st_size
            if size > COMPACT_MIN_BYTES and size > COMPACT_FACTOR * max(self._live, 1):
                self._sync()  # the live size as of now (the lock is held)
                if size > COMPACT_FACTOR * max(self._live, 1):
                    self._compact()

    def _compact(self) -> None:
        """Rewrite the log as the live state (the lock is held): readers reload by inode."""
        temporary = self.path / f"{LOG_FILE}.{os.getpid()}.tmp"
        data = b"".join(_write_record(k, v) for k, v in sorted(self._state.items()))
        temporary.write_bytes(data)
        os.replace(temporary, self._log)

    # -- lab-only -----------------------------------------------------------------------

    def increment(self, path: str) -> int:
        """Raise a decimal counter by one under the writers' lock (the lab's own writes)."""
        _check_path(path)
        with self._locked() as log:
            self._sync()
            current = self._state.get(path, b"0")
            value = (int(current) if current.isdigit() else 0) + 1
            os.write(log, _write_record(path, str(value).encode("ascii")))
            return value

    def write_many(self, values: Mapping[str, bytes | None]) -> None:
        """Several writes (None: rm) appended at once, in order (the lab's static keys)."""
        records = []
        for path, value in values.items():
            _check_path(path)
            records.append(_rm_record(path) if value is None else _write_record(path, value))
        if records:
            self._append(b"".join(records))
