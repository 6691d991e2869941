"""Writes the status document (model/status_document.py) for dom0's front ends, atomically."""

import hashlib
from collections.abc import Sequence
from pathlib import Path

from ..model import status_document
from ..model.errors import ValidationError
from ..model.forward_status import ForwardStatus
from ..model.topology import Topology
from ..store.atomic_file import read_limited, write_atomically

# Beside the socket: /run/qubes-portfwd/status.json on a host with the default socket.
STATUS_FILE_NAME = "status.json"
MAX_STATUS_BYTES = 256 << 20


class StatusWriter:
    """One writer per service; `sequence` goes on from the document a previous run left.

    A document saying what the last one written said, still in place, is not written again:
    the sequence numbers what front ends can see change (a re-plan finding nothing new)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sequence = _last_sequence(path)
        self._written: tuple[bytes, tuple[int, int] | None] | None = None

    def write(self, boot_id: str, topology: Topology, forwards: Sequence[ForwardStatus]) -> None:
        self.write_texts(boot_id, topology, [status_document.forward_text(f) for f in forwards])

    def write_texts(self, boot_id: str, topology: Topology, forward_texts: Sequence[bytes]) -> None:
        """`write` of forwards already encoded (`status_document.forward_text`)."""
        qubes = status_document.qube_paths(topology)
        unnumbered = status_document.unnumbered_of_texts(boot_id, qubes, forward_texts)
        # A digest of the content, not the content: 10,000 forwards' statuses kept alive
        # were tens of MB of the service's memory at rest.
        digest = hashlib.sha256(unnumbered).digest()
        if (digest, _identity(self.path)) == self._written:
            return
        self.sequence += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Readable by dom0's tools of the admin group (write_atomically's new-file mode).
        # Not synced: every start writes it again at its first publish, and syncing 1,000
        # forwards' document cost an add ~10 ms (the lab's host, /var/lib on a Qubes host).
        data = status_document.numbered(unnumbered, self.sequence)
        write_atomically(self.path, data, durable=False)
        self._written = (digest, _identity(self.path))


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is there now: a document replaced or removed by anyone else is written."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _last_sequence(path: Path) -> int:
    # Its forwards left unread: at 10,000 forwards reading them was ~0.2 s of every start.
    try:
        data = read_limited(path, MAX_STATUS_BYTES)
        return status_document.loads(data, with_forwards=False).sequence
    except (OSError, ValueError, ValidationError):
        return 0
