"""Writes the status document (model/status_document.py) for dom0's front ends, atomically."""

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
    """One writer per service; `sequence` goes on from the document a previous run left."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sequence = _last_sequence(path)

    def write(self, boot_id: str, topology: Topology, forwards: Sequence[ForwardStatus]) -> None:
        self.sequence += 1
        document = status_document.StatusDocument(
            self.sequence, boot_id, status_document.qube_paths(topology), tuple(forwards)
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Readable by dom0's tools of the admin group (write_atomically's new-file mode).
        write_atomically(self.path, status_document.dumps(document))


def _last_sequence(path: Path) -> int:
    try:
        return status_document.loads(read_limited(path, MAX_STATUS_BYTES)).sequence
    except (OSError, ValueError, ValidationError):
        return 0
