"""Dom0's side of our protocol in one qube's DB: publish entries with a commit marker, read
the agent's report (untrusted), wait (bounded) for its handled counter."""

from collections.abc import Iterable, Mapping

from ..model.db_layout import (
    HANDLED,
    MARKER,
    MAX_VALUE,
    NO_STATUS,
    PUBLIC_PREFIX,
    UPDATED,
    Status,
    counter_value,
    decode_text,
    is_qube_written,
    parse_counter,
    report_from,
    valid_path,
)
from ..ports.qube_db import QubeDb
from .watch import wait_until

REPORT_PREFIX = "/qubes-portfwd-"  # every key a qube writes for us (see db_layout)


class Dom0Channel:
    """One qube's DB as dom0's controller uses it."""

    def __init__(self, db: QubeDb, name: str = "") -> None:
        self.db = db
        self.name = name
        self._watching = False

    def generation(self) -> int:
        return parse_counter(self.db.read(MARKER)) or 0

    def read(self) -> tuple[int, dict[str, str]]:
        """(committed generation, every key dom0 or the lab wrote, as text)."""
        generation = self.generation()
        entries = {
            path: value.decode("ascii", errors="replace")
            for path, value in self.db.multiread("/").items()
            if path != MARKER and not is_qube_written(path)
        }
        return generation, entries

    def replace_prefixes(self, prefixes: Iterable[str], entries: Mapping[str, str]) -> int:
        """Entries under `prefixes` become exactly `entries`, then the marker commits them;
        answers the new generation. Only what differs is written or removed."""
        prefixes = tuple(prefixes)
        stray = [k for k in entries if not k.startswith(prefixes)]
        if not prefixes or stray:
            raise ValueError(f"keys {stray[:5]} are outside the replaced prefixes {list(prefixes)}")
        current: dict[str, bytes] = {}
        for prefix in prefixes:
            current.update(self.db.multiread(prefix))
        # Only what is written is checked: a key the DB already holds with this value was
        # checked when it was written (at 1,000 forwards a change writes a few of ~800).
        writes = {}
        for key, text in entries.items():
            value = text.encode("ascii")
            if current.get(key) == value:
                continue
            if not valid_path(key) or len(value) > MAX_VALUE:
                raise ValueError(
                    f"entry {key[:80]!r}: a QubesDB path (under 64 bytes of [A-Za-z0-9/_.:@-]) "
                    f"with a value under {MAX_VALUE + 1} bytes"
                )
            writes[key] = value
        for key in sorted(set(current) - set(entries)):
            self.db.rm(key)
        for key, value in writes.items():
            self.db.write(key, value)
        return self.commit()

    def commit(self) -> int:
        """Write the marker LAST: the agent acts on it. Answers the new generation."""
        generation = self.generation() + 1
        self.db.write(MARKER, counter_value(generation))
        return generation

    def read_status(self) -> Status:
        untrusted_values = self.db.multiread(REPORT_PREFIX)
        return report_from(untrusted_values)

    def read_public(self) -> dict[str, str]:
        """A tunnel keeper's endpoints as text (untrusted: the qube wrote them)."""
        return {
            untrusted_path: decode_text(value)
            for untrusted_path, value in self.db.multiread(PUBLIC_PREFIX).items()
        }

    def handled(self) -> int:
        return parse_counter(self.db.read(HANDLED)) or 0

    def read_owned(self, prefixes: tuple[str, ...]) -> tuple[int, dict[str, str]]:
        """(committed generation, the entries under `prefixes`, as text): `read` without
        the agent's report beside them (at 1,000 forwards as many keys again)."""
        generation = self.generation()
        entries = {
            path: value.decode("ascii", errors="replace")
            for prefix in prefixes
            for path, value in self.db.multiread(prefix).items()
        }
        return generation, entries

    def wait_for_handled(self, generation: int, timeout: float) -> Status:
        """The report once the agent handled `generation` or later; QubeDbTimeout after."""
        self.wait_until_handled(generation, timeout)
        status = self.read_status()
        return status if status.handled >= generation else NO_STATUS

    def wait_until_handled(self, generation: int, timeout: float) -> None:
        """Once the agent handled `generation` or later; QubeDbTimeout after."""
        if not self._watching:
            self.db.watch(HANDLED)
            self._watching = True
        wait_until(
            self.db,
            lambda: True if self.handled() >= generation else None,
            timeout,
            f"{self.name or 'qube'}: agent's handled counter below {generation}",
        )

    def state_token(self) -> object:
        """Differs once dom0 committed, the agent reported again or a tunnel keeper's
        public endpoints changed."""
        marker, handled, updated = (self.db.read(k) for k in (MARKER, HANDLED, UPDATED))
        return (marker, handled, updated, tuple(self.db.multiread(PUBLIC_PREFIX).items()))
