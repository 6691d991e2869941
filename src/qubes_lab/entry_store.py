"""A qube's DB as the lab and its tests use it: dom0's side and the qube's side of the
product's protocol (`qubes_portfwd.db`) over the lab's adapter (`qube_db.FileQubeDb`), plus
the lab's own writes of the keys Qubes provides (`/qubes-ip`, `/qubes-service/...`), each
committed with the marker so the agent applies them as dom0's entries are.
"""

import os
from collections.abc import Iterable, Mapping

from qubes_portfwd.db.dom0 import Dom0Channel
from qubes_portfwd.db.qube import QubeChannel
from qubes_portfwd.db.watch import wait_until
from qubes_portfwd.model.db_layout import (  # noqa: F401  (re-exported for the lab's tests)
    ERROR,
    HANDLED,
    MARKER,
    NO_STATUS,
    STATUS_APPLIED,
    STATUS_PREFIX,
    UPDATED,
    Status,
)
from qubes_portfwd.ports.qube_db import QubeDbTimeout

from .qube_db import FileQubeDb

StoreTimeout = QubeDbTimeout


class EntryStore(Dom0Channel):
    """One qube's DB under `path`, seen from dom0 (and, for tests, from the qube)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file_db = FileQubeDb(path)
        super().__init__(self.file_db, name=str(path))
        self.path = self.file_db.path
        self._qube: QubeChannel | None = None
        self._watching_marker = False

    def commit(self) -> int:
        # The lab and dom0's service both commit to a lab qube: a locked increment keeps
        # their generations distinct.
        return self.file_db.increment(MARKER)

    def _write(self, change: Mapping[str, str | None]) -> int:
        encoded = {k: None if v is None else v.encode("ascii") for k, v in change.items()}
        self.file_db.write_many(encoded)
        return self.commit()

    def set(self, key: str, value: str) -> int:
        return self._write({key: value})

    def delete(self, key: str) -> int:
        return self._write({key: None})

    def set_many(self, entries: Mapping[str, str]) -> int:
        return self._write(dict(entries))

    def replace_except(self, kept_prefixes: Iterable[str], entries: Mapping[str, str]) -> int:
        """Keep only the keys under `kept_prefixes`, add `entries`; with none kept this is a
        qube's fresh QubesDB at start (the generation still rises)."""
        kept_prefixes = tuple(kept_prefixes)
        clashing = [k for k in entries if kept_prefixes and k.startswith(kept_prefixes)]
        if clashing:
            raise ValueError(f"keys {clashing} lie under the kept prefixes {list(kept_prefixes)}")
        _, current = self.read()
        gone = {
            k: None
            for k in current
            if not (kept_prefixes and k.startswith(kept_prefixes)) and k not in entries
        }
        return self._write({**gone, **entries})

    def wait_for_change(self, after_generation: int, timeout: float) -> int:
        """The generation once it exceeds `after_generation`; StoreTimeout after `timeout`."""
        if not self._watching_marker:
            self.file_db.watch(MARKER)
            self._watching_marker = True
        return wait_until(
            self.file_db,
            lambda: g if (g := self.generation()) > after_generation else None,
            timeout,
            f"{self.path}: generation still {after_generation}",
        )

    def change_token(self) -> object:
        return self.file_db.read(MARKER)

    # -- the qube's side (tests standing in for an agent or a keeper) --------------------

    @property
    def qube_side(self) -> QubeChannel:
        if self._qube is None:
            self._qube = QubeChannel(self.file_db)
        return self._qube

    def write_status(
        self, handled_generation: int, per_key: Mapping[str, str], error: str | None
    ) -> None:
        self.qube_side.write_status(handled_generation, per_key, error)

    def write_public(self, endpoints: Mapping[str, str]) -> None:
        self.qube_side.write_public(endpoints)

    def clear_status(self) -> None:
        """Forget the agent's report (its qube stopped): nothing counts as applied now."""
        self.file_db.write_many(
            {STATUS_PREFIX + "/": None, ERROR: None, UPDATED: None, HANDLED: None}
        )
        self._qube = None
