"""Whole-file reads with a size limit and crash-safe replacement of a file."""

import contextlib
import os
import stat
import tempfile
from pathlib import Path

DEFAULT_MODE = 0o664  # what Qubes' umask 002 gives its firewall.xml


class FileTooLarge(ValueError):
    """The file is over the size limit; nothing past the limit was read."""


def read_limited(path: Path, limit: int) -> bytes:
    """The whole file, or FileTooLarge without reading more than `limit` + 1 bytes."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{path} is larger than {limit} bytes")
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` so that after a crash it holds either the old or the new bytes.

    The data is written to a temporary file in the same directory, synced, renamed over
    `path`, and the directory is synced so the rename itself survives a crash.
    """
    directory = path.parent
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = DEFAULT_MODE
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fchmod(temp.fileno(), mode)
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
