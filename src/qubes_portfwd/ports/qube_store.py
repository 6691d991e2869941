"""Port: one qube's entry store, as dom0 publishes into it and the qube's programs use it.

Dom0 replaces the entries it owns (each write a new generation) and waits for the qube's
report; the agent reads the entries, watches for a change and reports the generation it
handled with a status per key; a tunnel qube's lease keeper reports its public endpoints.
The lab's adapter is `qubes_lab.entry_store.EntryStore`; on a stock host the qube's QubesDB
takes its place (issue 16).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

STATUS_APPLIED = "applied"


class StoreTimeout(TimeoutError):
    """A bounded wait on the store ran out."""


@dataclass(frozen=True)
class Status:
    """What an agent reported: the entries generation it handled and the outcome per key."""

    handled: int
    per_key: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    updated: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_key", MappingProxyType(dict(self.per_key)))

    @property
    def failed_keys(self) -> dict[str, str]:
        return {k: v for k, v in self.per_key.items() if v != STATUS_APPLIED}


NO_STATUS = Status(handled=0)


class QubeSide(Protocol):
    """What the programs inside a qube use: the agent and the tunnel lease keeper."""

    def read(self) -> tuple[int, dict[str, str]]:
        """(generation, every entry)."""
        ...

    def change_token(self) -> object:
        """Differs once the entries changed (cheap: compared, never interpreted)."""
        ...

    def write_status(
        self, handled_generation: int, per_key: Mapping[str, str], error: str | None
    ) -> None: ...

    def write_public(self, endpoints: Mapping[str, str]) -> None: ...


class Dom0Side(Protocol):
    """What dom0's controller uses of each qube's store."""

    def read(self) -> tuple[int, dict[str, str]]: ...

    def replace_prefixes(self, prefixes: Iterable[str], entries: Mapping[str, str]) -> int:
        """Entries under `prefixes` become exactly `entries`; answers the new generation."""
        ...

    def read_status(self) -> Status: ...

    def wait_for_handled(self, generation: int, timeout: float) -> Status:
        """The report once the agent handled `generation` or later; StoreTimeout after."""
        ...

    def read_public(self) -> dict[str, str]: ...

    def state_token(self) -> object:
        """Differs once the entries or any report changed."""
        ...
