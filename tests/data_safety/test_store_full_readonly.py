"""A full disk or a read-only store: the client gets a clear error and nothing changes.

The admin service runs in a private mount namespace (`unshare -m`) with its state dir on a
small tmpfs of its own, so the host's filesystems are never touched. The test fills that
tmpfs, or remounts it read-only, through the service's namespace (/proc/PID/root, nsenter).
"""

import contextlib
import errno
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qubes_lab import admin_launcher as launcher
from qubes_lab.entry_store import EntryStore
from qubes_portfwd.client import QubesdError
from qubes_portfwd.store.atomic_file import temp_files

from .admind_process import TARGET, AdmindFiles, filter_lines, forward_line, kill_hard

pytestmark = pytest.mark.lab  # mounts a tmpfs in a private mount namespace (root)

TMPFS_SIZE = "1m"
START_TIMEOUT = 15.0
# The netvm's entry store holds the target's outbound firewall: what its agent would apply.
NETVM = "sys-firewall"


class PrivateStore:
    """The service running with its state dir on a private tmpfs; paths seen through it."""

    def __init__(self, files: AdmindFiles) -> None:
        self.files = files
        files.state_dir.mkdir()
        options = files.argv_options()
        argv = [
            "unshare", "-m", "--propagation", "private", "--",
            "sh", "-c", f'mount -t tmpfs -o size={TMPFS_SIZE} qpt-store "$0" && exec "$@"',
            str(files.state_dir),
            sys.executable, "-m", "qubes_lab.qubesd", "--no-qube-sockets", "-v",
            "--socket", str(files.socket_path), "--state-dir", str(files.state_dir),
            "--topology", str(options["topology_file"]),
            "--qubesdb-dir", str(options["qubesdb_dir"]),
            "--boot-id-file", str(options["boot_id_file"]),
            "--agent-timeout", "0.05", "--reconcile-interval", "30",
        ]  # fmt: skip
        with open(files.root / "admind.log", "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not launcher._answers(files.socket_path):
            assert self.process.poll() is None, "the service exited; see admind.log"
            assert time.monotonic() < deadline, "the service did not answer"
            time.sleep(launcher.POLL_INTERVAL)

    def inside(self, path: Path) -> Path:
        """`path` as the service sees it (in its mount namespace)."""
        return Path(f"/proc/{self.process.pid}/root") / path.relative_to("/")

    def mount(self, *options: str) -> None:
        subprocess.run(
            ["nsenter", "-t", str(self.process.pid), "-m", "mount", *options],
            check=True,
            timeout=10,
        )

    def fill(self) -> Path:
        """Fill the tmpfs to the last byte; returns the filler file."""
        filler = self.inside(self.files.state_dir) / "filler"
        with filler.open("wb", buffering=0) as out:
            for chunk in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while out.write(b"\0" * chunk):
                        pass
        with pytest.raises(OSError) as full:
            (filler.parent / "probe").write_bytes(b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
        return filler

    def stop(self) -> None:
        kill_hard(self.process.pid)
        self.process.wait(timeout=10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PrivateStore]:
    running = PrivateStore(AdmindFiles(tmp_path))
    try:
        yield running
    finally:
        running.stop()


def snapshot(store: PrivateStore) -> tuple[bytes, list[Path], tuple[int, dict[str, str]]]:
    firewall_xml = store.inside(store.files.firewall_xml())
    netvm_entries = EntryStore(store.files.qubesdb_dir / NETVM).read()
    return firewall_xml.read_bytes(), temp_files(firewall_xml), netvm_entries


def refused(call: object) -> QubesdError:
    with pytest.raises(QubesdError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_full_disk_is_a_clear_error_and_changes_nothing(store: PrivateStore) -> None:
    client = store.files.client()
    client.firewall_set(TARGET, filter_lines(1, 20))
    before = snapshot(store)
    assert before[2][1], "the netvm's entries should hold the target's firewall"
    filler = store.fill()

    err = refused(lambda: client.firewall_set(TARGET, filter_lines(2, 400)))
    assert "firewall.xml" in err.message and "No space left on device" in err.message
    assert "internal error" not in err.message and "Traceback" not in err.message
    err = refused(lambda: client.add_forward(TARGET, forward_line(3)))
    assert "No space left on device" in err.message
    assert snapshot(store) == before  # file, temp files, the netvm's entries (its kernel rules)
    assert client.firewall_get(TARGET) == filter_lines(1, 20)

    filler.unlink()  # space again: the same request now goes through
    client.firewall_set(TARGET, filter_lines(2, 400))
    assert client.firewall_get(TARGET) == filter_lines(2, 400)


def test_read_only_store_is_a_clear_error_and_changes_nothing(store: PrivateStore) -> None:
    client = store.files.client()
    client.firewall_set(TARGET, filter_lines(1, 20))
    before = snapshot(store)
    store.mount("-o", "remount,ro", str(store.files.state_dir))
    try:
        err = refused(lambda: client.firewall_set(TARGET, filter_lines(2, 30)))
        assert "firewall.xml" in err.message and "Read-only file system" in err.message
        err = refused(lambda: client.add_forward(TARGET, forward_line(3)))
        assert "Read-only file system" in err.message
        assert snapshot(store) == before
        assert client.firewall_get(TARGET) == filter_lines(1, 20)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            store.mount("-o", "remount,rw", str(store.files.state_dir))
    client.firewall_set(TARGET, filter_lines(2, 30))
    assert client.firewall_get(TARGET) == filter_lines(2, 30)


def test_full_state_dir_with_room_for_firewall_xml_stores_and_publishes_nothing(
    store: PrivateStore,
) -> None:
    """The order file cannot be written but firewall.xml could: the add is refused whole."""
    client = store.files.client()
    client.firewall_set(TARGET, filter_lines(1, 5))
    qube_dir = store.inside(store.files.firewall_xml()).parent
    kept = (qube_dir / "firewall.xml").read_bytes()
    store.mount("-t", "tmpfs", "-o", "size=1m", "qpt-qube", str(store.files.firewall_xml().parent))
    (qube_dir / "firewall.xml").write_bytes(kept)
    before = snapshot(store)
    filler = store.fill()

    err = refused(lambda: client.add_forward(TARGET, forward_line(2)))
    assert "No space left on device" in err.message
    client.firewall_reload(TARGET)  # a re-plan right away publishes whatever is kept
    assert snapshot(store) == before
    assert client.firewall_get(TARGET) == filter_lines(1, 5)
    assert client.forwards() == []

    filler.unlink()
    added = client.add_forward(TARGET, forward_line(2))
    assert [f.id for f in client.forwards()] == [added]
