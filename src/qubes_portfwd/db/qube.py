"""The qube's side of our protocol in its own DB: the entries dom0 committed, the agent's
report (statuses, then the handled counter LAST), a tunnel keeper's public endpoints."""

import time
from collections.abc import Mapping

from ..model.db_layout import (
    ERROR,
    HANDLED,
    MARKER,
    PUBLIC_PREFIX,
    STATUS_PREFIX,
    UPDATED,
    counter_value,
    is_qube_written,
    parse_counter,
    status_path,
    text_value,
    valid_path,
)
from ..ports.qube_db import QubeDb


class QubeChannel:
    """One qube's own DB as its agent and tunnel keeper use it."""

    def __init__(self, db: QubeDb) -> None:
        self.db = db
        self._statuses: dict[str, bytes] | None = None  # as last written: only changes are
        self._public: dict[str, bytes] | None = None

    def watch_commits(self) -> None:
        """Watch dom0's commit marker (an exact path: fires once per commit)."""
        self.db.watch(MARKER)

    def generation(self) -> int:
        return parse_counter(self.db.read(MARKER)) or 0

    def read(self) -> tuple[int, dict[str, str]]:
        """(committed generation, every entry dom0 wrote, as text; untrusted for parsers)."""
        generation = self.generation()
        untrusted_entries = {
            path: value.decode("ascii", errors="replace")
            for path, value in self.db.multiread("/").items()
            if path != MARKER and not is_qube_written(path)
        }
        return generation, untrusted_entries

    def write_status(
        self, handled_generation: int, per_key: Mapping[str, str], error: str | None
    ) -> None:
        """Statuses and error first, the handled counter last: dom0 waits on that one."""
        if self._statuses is None:
            self._statuses = {
                path: value for path, value in self.db.multiread(STATUS_PREFIX + "/").items()
            }
        wanted = {
            status_path(key): text_value(value)
            for key, value in per_key.items()
            if valid_path(status_path(key))
        }
        for path in sorted(set(self._statuses) - set(wanted)):
            self.db.rm(path)
        for path, value in wanted.items():
            if self._statuses.get(path) != value:
                self.db.write(path, value)
        self._statuses = wanted
        if error is None:
            self.db.rm(ERROR)
        else:
            self.db.write(ERROR, text_value(error))
        self.db.write(UPDATED, f"{time.time():.6f}".encode("ascii"))
        self.db.write(HANDLED, counter_value(handled_generation))

    def write_public(self, endpoints: Mapping[str, str]) -> None:
        """The public endpoints become exactly `endpoints` (`PUBLIC_PREFIX<id>/<proto>/<port>`)."""
        if self._public is None:
            self._public = dict(self.db.multiread(PUBLIC_PREFIX))
        wanted = {
            path: text_value(value)
            for path, value in endpoints.items()
            if path.startswith(PUBLIC_PREFIX) and valid_path(path)
        }
        for path in sorted(set(self._public) - set(wanted)):
            self.db.rm(path)
        for path, value in wanted.items():
            if self._public.get(path) != value:
                self.db.write(path, value)
        self._public = wanted
