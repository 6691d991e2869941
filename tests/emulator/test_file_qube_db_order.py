"""The lab's QubesDB stand-in answers prefix reads from its ordered keys as a scan of all would."""

import random
from pathlib import Path

import pytest

from qubes_lab.qube_db import FileQubeDb

PATHS = ["/a", "/a/b", "/a/b/c", "/a/bc", "/ab", "/b", "/b/", "/b/x", "/qubes-portfwd/1/4"]
PREFIXES = ["/", "/a", "/a/", "/a/b", "/ab", "/b/", "/c", "/qubes-portfwd/"]


def test_prefix_reads_and_lists_match_a_scan_after_random_writes_and_removals(
    tmp_path: Path,
) -> None:
    writer, reader = FileQubeDb(tmp_path), FileQubeDb(tmp_path)
    model: dict[str, bytes] = {}
    draw = random.Random(17)
    for step in range(400):
        path = draw.choice(PATHS)
        if draw.random() < 0.6:
            value = str(step).encode()
            writer.write(path, value)
            model[path] = value
        elif path.endswith("/") or draw.random() < 0.5:
            subtree = path if path.endswith("/") else path + "/"
            writer.rm(subtree)
            model = {k: v for k, v in model.items() if not k.startswith(subtree)}
        else:
            writer.rm(path)
            model.pop(path, None)
        prefix = draw.choice(PREFIXES)
        scan = {k: v for k, v in sorted(model.items()) if k.startswith(prefix)}
        assert reader.multiread(prefix) == scan
        assert list(reader.multiread(prefix)) == list(scan)
        assert reader.list(prefix) == list(scan)


def test_a_reader_follows_every_append_and_every_rewrite_of_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader skips its replay when the log's stat is unchanged: every append, and every
    rewrite by another handle (compaction, a new file), must still reach it."""
    monkeypatch.setattr("qubes_lab.qube_db.COMPACT_MIN_BYTES", 256)
    writer, reader = FileQubeDb(tmp_path), FileQubeDb(tmp_path)
    reader.watch("/k/")
    model: dict[str, bytes] = {}
    rewrites = 0
    inode = None
    for step in range(300):
        path = f"/k/{step % 7}"
        value = b"x" * (step % 13)
        writer.write(path, value)  # the same few keys again and again: the log compacts
        model[path] = value
        assert reader.read(path) == value
        assert reader.multiread("/k/") == dict(sorted(model.items()))
        current = (tmp_path / "log").stat().st_ino
        rewrites += inode is not None and current != inode
        inode = current
    assert rewrites > 5
    fired = set()
    while (path := reader.read_watch()) is not None:
        fired.add(path)
    assert fired <= set(model)
