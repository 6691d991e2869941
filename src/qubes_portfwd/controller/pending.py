"""NAT requests waiting for the user: each has an id, a deadline and one outcome.

A request asked again while it waits (NAT-PMP clients retransmit) joins the waiting entry
instead of adding another. Each owner (the qube asking, through its netvm) has its own share
of the table, so one qube asking without end cannot crowd out the others. The clock is
passed in, so the table is testable without waits.
"""

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

DEFAULT_TIMEOUT = 120.0
MAX_PENDING = 64
MAX_PENDING_PER_OWNER = 8
ID_BYTES = 4

Ask = TypeVar("Ask")
Outcome = TypeVar("Outcome")


class PendingFull(Exception):
    """Too many requests wait already (of this owner, or in all); the newest is refused."""


@dataclass
class PendingEntry(Generic[Ask, Outcome]):
    id: str
    ask: Ask
    created: float
    deadline: float
    outcome: "asyncio.Future[Outcome | None]" = field(repr=False)

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)


class PendingTable(Generic[Ask, Outcome]):
    """`key(ask)` says when two asks are the same request, `owner(ask)` whose share it takes;
    a None outcome means refused."""

    def __init__(
        self,
        clock: Callable[[], float],
        key: Callable[[Ask], object],
        timeout: float = DEFAULT_TIMEOUT,
        owner: Callable[[Ask], object] = lambda _: None,
        per_owner: int = MAX_PENDING,
    ) -> None:
        self.clock = clock
        self.key = key
        self.timeout = timeout
        self.owner = owner
        self.per_owner = per_owner
        self._entries: dict[str, PendingEntry[Ask, Outcome]] = {}

    def _drop_expired(self) -> None:
        now = self.clock()
        for entry_id, entry in list(self._entries.items()):
            if entry.deadline <= now:
                del self._entries[entry_id]
                if not entry.outcome.done():
                    entry.outcome.set_result(None)

    def add(self, ask: Ask) -> PendingEntry[Ask, Outcome]:
        """The waiting entry for this ask: an existing one, or a new one."""
        self._drop_expired()
        wanted = self.key(ask)
        for entry in self._entries.values():
            if self.key(entry.ask) == wanted:
                return entry
        owner = self.owner(ask)
        if sum(self.owner(e.ask) == owner for e in self._entries.values()) >= self.per_owner:
            raise PendingFull(f"{self.per_owner} requests of this qube already wait for the user")
        if len(self._entries) >= MAX_PENDING:
            raise PendingFull(f"{MAX_PENDING} requests are already waiting for the user")
        entry_id = secrets.token_hex(ID_BYTES)
        while entry_id in self._entries:
            entry_id = secrets.token_hex(ID_BYTES)
        now = self.clock()
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        entry = PendingEntry(entry_id, ask, now, now + self.timeout, future)
        self._entries[entry_id] = entry
        return entry

    def entries(self) -> list[PendingEntry[Ask, Outcome]]:
        self._drop_expired()
        return sorted(self._entries.values(), key=lambda e: e.created)

    def take(self, entry_id: str) -> PendingEntry[Ask, Outcome]:
        """Remove a waiting entry to decide it; KeyError if unknown or timed out."""
        self._drop_expired()
        return self._entries.pop(entry_id)

    @staticmethod
    def settle(entry: PendingEntry[Ask, Outcome], outcome: Outcome | None) -> None:
        if not entry.outcome.done():
            entry.outcome.set_result(outcome)
