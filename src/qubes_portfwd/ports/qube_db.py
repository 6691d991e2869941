"""Port: one qube's QubesDB, as the `qubesdb` binding offers it (in a qube: `QubesDB()`; in
dom0: `vm.untrusted_qdb`).

Paths are `/`-rooted ASCII (QubesDB's characters, under 64 bytes); values are bytes (under
3072). `rm` of a path ending in `/` removes that subtree. A watch on a path ending in `/`
fires for every path under it, otherwise for that exact path only; `watch_fd` becomes
readable when a watch may have fired, and `read_watch` then answers the fired path. Whatever
dom0 reads from a qube's DB is untrusted. Adapters: `qubes_portfwd.adapters.qubesdb_binding`
(stock Qubes) and the lab's `qubes_lab.qube_db.FileQubeDb`; `tests/ports/` holds the contract.
"""

from typing import Protocol


class QubeDbTimeout(TimeoutError):
    """A bounded wait on a qube's DB ran out."""


class QubeDb(Protocol):
    def read(self, path: str) -> bytes | None:
        """The value at `path`; None when there is none."""
        ...

    def multiread(self, prefix: str) -> dict[str, bytes]:
        """Every path starting with `prefix` and its value."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every path starting with `prefix`, sorted."""
        ...

    def write(self, path: str, value: bytes) -> None: ...

    def rm(self, path: str) -> None:
        """Remove `path`, or the subtree when it ends in `/`; no error when absent."""
        ...

    def watch(self, path: str) -> None: ...

    def watch_fd(self) -> int:
        """A file descriptor that turns readable when a watch may have fired."""
        ...

    def read_watch(self) -> str | None:
        """The path that fired. Call it once `watch_fd` is readable: the real binding blocks
        until an event comes; the lab's answers None when the wake concerned no watch."""
        ...
