"""Whole-file reads with a size limit and crash-safe replacement of a file."""

import contextlib
import glob
import json
import os
import stat
import tempfile
from pathlib import Path

DEFAULT_MODE = 0o664  # what Qubes' umask 002 gives its firewall.xml
TEMP_SUFFIX = ".tmp"


class FileTooLarge(ValueError):
    """The file is over the size limit; nothing past the limit was read."""


def read_limited(path: Path, limit: int) -> bytes:
    """The whole file, or FileTooLarge without reading more than `limit` + 1 bytes."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{path} is larger than {limit} bytes")
    return data


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` so that after a crash it holds either the old or the new bytes.

    The data is written to a temporary file in the same directory, synced, renamed over
    `path`, and the directory is synced so the rename itself survives a crash. Temporary
    files that a killed writer left behind are removed first; a failed write removes its own.

    Not `durable`: no sync (readers still see the old or the new file whole), for a file its
    writer makes again after a restart anyway.
    """
    directory = path.parent
    remove_stale_temps(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = DEFAULT_MODE
    fd, temp_name = tempfile.mkstemp(
        prefix=_temp_prefix(path, os.getpid()), suffix=TEMP_SUFFIX, dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fchmod(temp.fileno(), mode)
            if durable:
                os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    if durable:
        _fsync_directory(directory)


def write_json_atomically(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(document, sort_keys=True, indent=1).encode())


def _temp_prefix(path: Path, pid: int) -> str:
    # The writer's pid in the name tells a killed writer's leftovers from a live one's.
    return f".{path.name}.{pid}."


def temp_files(path: Path) -> list[Path]:
    """Temporary files of `path` present now (a live writer's, or a killed writer's)."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"))


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of `path` whose writer process no longer exists."""
    for temp in temp_files(path):
        pid_text = temp.name[len(path.name) + 2 :].partition(".")[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    # A killed writer its parent has not reaped yet still answers kill(pid, 0).
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_text.rpartition(")")[2].split()[:1] == ["Z"]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
