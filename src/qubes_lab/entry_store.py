"""The lab's stand-in for QubesDB: one qube's key/value document on the host, with status.

The lab's adapter of the product's port `qubes_portfwd.ports.qube_store`.

A store is a directory holding `entries.json` (`{"generation": N, "entries": {...}}`) and
`status.json` (what the qube's agent last applied). Writers hold an fcntl lock on `lock`
so concurrent read-modify-write cycles never lose an update; files are replaced atomically
(temp + fsync + rename) so readers never see half a document. Each write of the entries
raises the generation by one; the agent reports the generation it handled.
"""

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from qubes_portfwd.ports.qube_store import (  # noqa: F401  (re-exported for the lab)
    NO_STATUS,
    STATUS_APPLIED,
    Status,
    StoreTimeout,
)
from qubes_portfwd.store.atomic_file import write_atomically

ENTRIES_FILE = "entries.json"
STATUS_FILE = "status.json"
PUBLIC_FILE = "public.json"  # the tunnel qube's lease keeper: where its forwards are public
LOCK_FILE = "lock"
POLL_INTERVAL = 0.02  # seconds between stat() calls while waiting; cheap and well under 50 ms
# A file rewritten within one coarse kernel tick at a recycled inode can keep its stat token,
# so a wait also re-reads the document this often.
FULL_READ_INTERVAL = 0.5


def _write_atomically(path: Path, document: object) -> None:
    write_atomically(path, json.dumps(document, sort_keys=True, separators=(",", ":")).encode())


def _stat_token(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class EntryStore:
    """One qube's entries and status under `path` (created on first write)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._entries_path = self.path / ENTRIES_FILE
        self._status_path = self.path / STATUS_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- entries (written by the lab and the admin service, read by the agent) --

    def read(self) -> tuple[int, dict[str, str]]:
        """The current generation and a copy of the entries; (0, {}) before the first write."""
        try:
            raw = self._entries_path.read_bytes()
        except FileNotFoundError:
            return 0, {}
        untrusted_document = json.loads(raw)
        untrusted_entries = untrusted_document.get("entries", {})
        generation = untrusted_document.get("generation")
        if not isinstance(generation, int) or not isinstance(untrusted_entries, dict):
            raise ValueError(f"{self._entries_path}: not an entries document")
        entries = {str(k): str(v) for k, v in untrusted_entries.items()}
        return generation, entries

    def generation(self) -> int:
        return self.read()[0]

    def _update(self, change: Mapping[str, str | None], prefixes: Iterable[str] = ()) -> int:
        prefixes = tuple(prefixes)
        with self._locked():
            generation, entries = self.read()
            if prefixes:
                entries = {k: v for k, v in entries.items() if not k.startswith(prefixes)}
            for key, value in change.items():
                if value is None:
                    entries.pop(key, None)
                else:
                    entries[key] = value
            generation += 1
            _write_atomically(self._entries_path, {"generation": generation, "entries": entries})
            return generation

    def replace_prefixes(self, prefixes: Iterable[str], entries: Mapping[str, str]) -> int:
        """Drop every key under `prefixes`, add `entries`, in one write; returns the generation.

        Every key of `entries` must lie under one of the prefixes, so one owner's write can
        never clobber another owner's keys.
        """
        prefixes = tuple(prefixes)
        stray = [k for k in entries if not k.startswith(prefixes)]
        if not prefixes or stray:
            raise ValueError(f"keys {stray} are outside the replaced prefixes {list(prefixes)}")
        return self._update(entries, prefixes)

    def replace_except(self, kept_prefixes: Iterable[str], entries: Mapping[str, str]) -> int:
        """Keep only the keys under `kept_prefixes`, add `entries`; returns the generation.

        With no prefixes kept this is a qube's fresh QubesDB at start; the generation still
        rises, so nobody mistakes the new document for one already handled.
        """
        kept_prefixes = tuple(kept_prefixes)
        clashing = [k for k in entries if kept_prefixes and k.startswith(kept_prefixes)]
        if clashing:
            raise ValueError(f"keys {clashing} lie under the kept prefixes {list(kept_prefixes)}")
        with self._locked():
            generation, current = self.read()
            kept = {
                k: v for k, v in current.items() if kept_prefixes and k.startswith(kept_prefixes)
            }
            generation += 1
            document = {"generation": generation, "entries": {**kept, **entries}}
            _write_atomically(self._entries_path, document)
            return generation

    def set(self, key: str, value: str) -> int:
        return self._update({key: value})

    def delete(self, key: str) -> int:
        return self._update({key: None})

    def set_many(self, entries: Mapping[str, str]) -> int:
        return self._update(entries)

    def change_token(self) -> tuple[int, int, int] | None:
        """Changes whenever the entries file is replaced; cheap enough to poll."""
        return _stat_token(self._entries_path)

    def state_token(self) -> tuple[object, object]:
        """Changes whenever the entries or the agent's report are replaced (or removed)."""
        return (_stat_token(self._entries_path), _stat_token(self._status_path))

    def wait_for_change(self, after_generation: int, timeout: float) -> int:
        """Block until the generation exceeds `after_generation`; StoreTimeout after `timeout`."""
        deadline = time.monotonic() + timeout
        token = None
        next_full_read = 0.0
        while True:
            current = self.change_token()
            if current != token or time.monotonic() >= next_full_read:
                token = current
                next_full_read = time.monotonic() + FULL_READ_INTERVAL
                generation = self.generation()
                if generation > after_generation:
                    return generation
            if time.monotonic() >= deadline:
                raise StoreTimeout(
                    f"{self.path}: generation still {after_generation} after {timeout} s"
                )
            time.sleep(POLL_INTERVAL)

    # -- status (written by the agent, read by tests and the admin service) --

    def write_status(
        self, handled_generation: int, per_key: Mapping[str, str], error: str | None
    ) -> None:
        document = {
            "handled": handled_generation,
            "per_key": dict(per_key),
            "error": error,
            "updated": time.time(),
        }
        with self._locked():
            _write_atomically(self._status_path, document)

    def clear_status(self) -> None:
        """Forget the agent's report (its qube stopped): nothing counts as applied now."""
        with self._locked(), contextlib.suppress(FileNotFoundError):
            self._status_path.unlink()

    def read_status(self) -> Status:
        try:
            untrusted_document = json.loads(self._status_path.read_bytes())
        except FileNotFoundError:
            return NO_STATUS
        handled = untrusted_document.get("handled")
        untrusted_per_key = untrusted_document.get("per_key")
        error = untrusted_document.get("error")
        if not isinstance(handled, int) or not isinstance(untrusted_per_key, dict):
            raise ValueError(f"{self._status_path}: not a status document")
        return Status(
            handled=handled,
            per_key={str(k): str(v) for k, v in untrusted_per_key.items()},
            error=None if error is None else str(error),
            updated=float(untrusted_document.get("updated", 0.0)),
        )

    def wait_for_handled(self, generation: int, timeout: float) -> Status:
        """Block until the agent handled `generation` or later; StoreTimeout after `timeout`."""
        deadline = time.monotonic() + timeout
        token = None
        next_full_read = 0.0
        status = NO_STATUS
        while True:
            current = _stat_token(self._status_path)
            if current != token or time.monotonic() >= next_full_read:
                token = current
                next_full_read = time.monotonic() + FULL_READ_INTERVAL
                status = self.read_status()
                if status.handled >= generation:
                    return status
            if time.monotonic() >= deadline:
                raise StoreTimeout(
                    f"{self.path}: agent handled {status.handled}, not {generation}, "
                    f"within {timeout} s"
                )
            time.sleep(POLL_INTERVAL)

    # -- public endpoints (written by a tunnel qube's lease keeper, read by the admin service) --

    def write_public(self, endpoints: Mapping[str, str]) -> None:
        """Replace the public endpoints: `/qubes-portfwd-public/<id>/<proto>/<port>` = A:P."""
        document = {"endpoints": dict(endpoints), "updated": time.time()}
        with self._locked():
            _write_atomically(self.path / PUBLIC_FILE, document)

    def read_public(self) -> dict[str, str]:
        """The keeper's last report as strings (untrusted: the qube wrote it); {} before one."""
        try:
            untrusted_document = json.loads((self.path / PUBLIC_FILE).read_bytes())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        untrusted_endpoints = (
            untrusted_document.get("endpoints") if isinstance(untrusted_document, dict) else None
        )
        if not isinstance(untrusted_endpoints, dict):
            return {}
        return {str(k): str(v) for k, v in untrusted_endpoints.items()}
