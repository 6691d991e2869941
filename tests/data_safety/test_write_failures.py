"""Failed writes: a clear error naming the file, the old file kept, no temp file left;
temp files of killed writers removed by the next write."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qubes_lab.qubesd.firewall_xml import FirewallWriteError, load_firewall, save_firewall
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import Action, FilterRule
from qubes_portfwd.store.atomic_file import temp_files, write_atomically

RULES = [FilterRule(Action.DROP, comment="kept")]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_a_failed_write_is_a_validation_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "firewall.xml"
    with pytest.raises(FirewallWriteError) as caught:
        save_firewall(path, RULES, 0.0, "b")
    assert isinstance(caught.value, ValidationError) and isinstance(caught.value, OSError)
    assert caught.value.field == "firewall.xml"
    assert str(path) in caught.value.message and "No such file or directory" in caught.value.message
    assert "stay as they were" in caught.value.message


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    save_firewall(path, RULES, 0.0, "b")
    before = path.read_bytes()
    (tmp_path / "blocker").mkdir()
    with pytest.raises(FirewallWriteError):
        save_firewall(tmp_path / "blocker", [FilterRule(Action.ACCEPT)], 0.0, "b")
    assert path.read_bytes() == before and load_firewall(path) == RULES
    assert temp_files(path) == [] and temp_files(tmp_path / "blocker") == []


def test_temp_files_of_dead_writers_go_and_of_live_ones_stay(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    dead = tmp_path / f".firewall.xml.{dead_pid()}.x1y2z3.tmp"
    live = tmp_path / f".firewall.xml.{os.getpid()}.a1b2c3.tmp"
    other = tmp_path / ".other.xml.1.a.tmp"
    for leftover in (dead, live, other):
        leftover.write_bytes(b"<firewall")
    write_atomically(path, b"new")
    assert not dead.exists() and live.exists() and other.exists()
    assert path.read_bytes() == b"new"


def test_a_zombie_writers_temp_file_goes_too(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        stat = Path(f"/proc/{child.pid}/stat")
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":  # exited, not reaped
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)  # polling interval of a bounded wait
        leftover = tmp_path / f".firewall.xml.{child.pid}.q1w2e3.tmp"
        leftover.write_bytes(b"<fire")
        write_atomically(tmp_path / "firewall.xml", b"new")
        assert not leftover.exists()
    finally:
        child.wait(timeout=30)


def test_a_write_that_need_not_last_replaces_the_file_unsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(b"old")
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    write_atomically(path, b"new", durable=False)
    assert path.read_bytes() == b"new" and temp_files(path) == [] and synced == []
    write_atomically(path, b"newer")
    assert path.read_bytes() == b"newer" and len(synced) == 2  # the file, then its directory
