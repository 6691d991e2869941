"""Reading the controller's status document (model/status_document.py) from its file."""

import os
from pathlib import Path

from ..model import status_document
from ..model.errors import ValidationError
from ..model.status_document import StatusDocument
from .connection import ServiceNotRunning

STATUS_ENV = "QUBES_PORTFWD_STATUS"
STATUS_FILE_NAME = "status.json"
MAX_STATUS_BYTES = 256 << 20


class StatusUnavailable(ConnectionError):
    """The status document cannot be read (not allowed, too large, or not a document)."""


class StatusMissing(StatusUnavailable, ServiceNotRunning):
    """No status document at all: the service that writes it has never run here."""


def default_status_path(socket_path: Path) -> Path:
    """`$QUBES_PORTFWD_STATUS`, else beside the service's socket, where the service writes it."""
    return Path(os.environ.get(STATUS_ENV) or socket_path.parent / STATUS_FILE_NAME)


def read_status(path: Path, *, with_forwards: bool = True) -> StatusDocument:
    """The whole document (without its forwards unless `with_forwards`): the service replaces
    it in one rename, so it is never half read."""
    try:
        with path.open("rb") as file:
            untrusted_data = file.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        raise StatusMissing(
            f"the admin service is not running (no status document at {path}; "
            f"set ${STATUS_ENV} if it writes it elsewhere)"
        ) from None
    except PermissionError:
        raise StatusUnavailable(f"not allowed to read {path}") from None
    if len(untrusted_data) > MAX_STATUS_BYTES:
        raise StatusUnavailable(f"{path} is larger than {MAX_STATUS_BYTES} bytes")
    try:
        return status_document.loads(untrusted_data, with_forwards=with_forwards)
    except ValidationError as err:
        raise StatusUnavailable(f"{path} is not a status document ({err})") from None
