"""Real QubesDB daemons (pinned sources, vchan over Unix sockets), dom0's side and a qube's.

These are facts about Qubes' own code; they guard the harness the real-code tests build on:
each side in its own mount namespace, two qubes kept apart, nothing left after stop.
"""

import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qubes_lab import netns
from qubes_lab.mount_sandbox import namespace_inode, pids_in_namespace
from qubes_lab.qubesdb_real import RealQubesDB

WAIT = 5.0  # bound on every wait for a watch

lab = pytest.mark.lab


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _synced(sender: Any, receiver: Any) -> None:
    """Wait until all `sender` wrote has reached `receiver`'s daemon.

    A write returns once the writer's own daemon holds it; the other side gets it over vchan
    later, in order. So, as core-admin does, a marker written last is watched for.
    """
    receiver.watch("/sync")
    sender.write("/sync", "")
    readable, _, _ = select.select([receiver.watch_fd()], [], [], WAIT)
    assert readable, "the marker did not arrive"
    assert receiver.read_watch() == "/sync"
    receiver.unwatch("/sync")


@lab
def test_a_dom0_write_arrives_in_the_qube_and_the_qubes_write_comes_back(
    real_qubesdb: RealQubesDB,
) -> None:
    work = real_qubesdb.add_qube("work", 5)
    dom0, own = real_qubesdb.open_dom0("work"), work.open()

    dom0.write("/qubes-portfwd/a1b2c3d4e5f6/4", "role=accept family=4")
    _synced(dom0, own)
    seen = work.run(["qubesdb-read", "/qubes-portfwd/a1b2c3d4e5f6/4"])
    assert (seen.returncode, seen.stdout) == (0, "role=accept family=4\n"), seen.stderr

    wrote = work.run(_python("import qubesdb; qubesdb.QubesDB().write('/handled', '7')"))
    assert wrote.returncode == 0, wrote.stderr
    _synced(own, dom0)
    assert dom0.read("/handled") == b"7"
    from_dom0 = real_qubesdb.run_dom0(["qubesdb-read", "-d", "work", "/handled"])
    assert from_dom0.stdout == "7\n", from_dom0.stderr


@lab
def test_a_watch_fires_on_its_descriptor(real_qubesdb: RealQubesDB) -> None:
    work = real_qubesdb.add_qube("work", 5).open()
    dom0 = real_qubesdb.open_dom0("work")
    work.watch("/qubes-portfwd")

    dom0.write("/qubes-portfwd/a/4", "entry")  # under the exact path: no event
    dom0.write("/qubes-portfwd", "")  # the commit marker

    readable, _, _ = select.select([work.watch_fd()], [], [], WAIT)
    assert readable, "the watch descriptor stayed quiet"
    assert work.read_watch() == "/qubes-portfwd"
    assert select.select([work.watch_fd()], [], [], 0.2)[0] == []


@lab
def test_rm_with_a_trailing_slash_removes_the_subtree_in_the_qube(
    real_qubesdb: RealQubesDB,
) -> None:
    work = real_qubesdb.add_qube("work", 5).open()
    dom0 = real_qubesdb.open_dom0("work")
    for path in ("/x", "/x/a", "/x/b/c", "/xy"):
        dom0.write(path, "1")

    dom0.rm("/x")
    _synced(dom0, work)
    assert sorted(work.list("/x")) == ["/x/a", "/x/b/c", "/xy"]
    dom0.rm("/x/")
    _synced(dom0, work)
    assert sorted(work.list("/x")) == ["/xy"]


@lab
def test_two_qubes_do_not_see_each_other(real_qubesdb: RealQubesDB) -> None:
    work, personal = real_qubesdb.add_qube("work", 5), real_qubesdb.add_qube("personal", 6)
    work_db, personal_db = work.open(), personal.open()
    dom0_work, dom0_personal = real_qubesdb.open_dom0("work"), real_qubesdb.open_dom0("personal")
    dom0_work.write("/secret", "work's")
    work_db.write("/own", "from work")
    _synced(dom0_work, work_db)
    _synced(work_db, dom0_work)
    _synced(dom0_personal, personal_db)
    _synced(personal_db, dom0_personal)

    assert personal_db.list("/") == ["/sync"]
    assert personal.run(["qubesdb-read", "/secret"]).returncode != 0
    assert dom0_personal.read("/own") is None
    assert work_db.read("/secret") == b"work's" and dom0_work.read("/own") == b"from work"
    assert work.join_mount != personal.join_mount


@lab
def test_a_lab_qubes_process_joins_the_qubes_db_in_its_netns(real_qubesdb: RealQubesDB) -> None:
    name = f"rqdb{os.getpid()}"
    netns.add(name)
    try:
        work = real_qubesdb.add_qube("work", 5, netns=name)
        dom0 = real_qubesdb.open_dom0("work")
        dom0.write("/qubes-ip", "10.137.0.5")
        _synced(dom0, work.open())

        links = work.run(["ip", "-o", "link", "show"])
        read = work.run(["qubesdb-read", "/qubes-ip"])
        assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"]
        assert read.stdout == "10.137.0.5\n", read.stderr
    finally:
        real_qubesdb.stop()  # before the netns goes: nothing of ours may hold it
        netns.delete(name)


@lab
def test_the_host_keeps_its_own_run_qubes(real_qubesdb: RealQubesDB) -> None:
    before = Path("/run/qubes").exists(), Path("/var/log/qubes").exists()
    real_qubesdb.add_qube("work", 5)

    assert real_qubesdb.dom0.path("/run/qubes/qubesdb.work.sock").exists()
    assert (Path("/run/qubes").exists(), Path("/var/log/qubes").exists()) == before
    assert not Path("/run/qubes/qubesdb.work.sock").exists()


def _our_mounts(tmp_path: Path) -> list[str]:
    """The host's mounts at the paths a namespace here covers, or under our work dir."""
    covered = ("/run", "/var/log", "/run/qubes", "/var/log/qubes")
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [
        line
        for line in lines
        if line.split()[4] in covered or line.split()[4].startswith(str(tmp_path))
    ]


def _name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


@lab
def test_stop_leaves_no_process_and_no_mount(tmp_path: Path) -> None:
    mounts_before = _our_mounts(tmp_path)
    qubesdb = RealQubesDB.start(tmp_path)
    try:
        work = qubesdb.add_qube("work", 5)
        code = "import qubesdb; d = qubesdb.QubesDB(); d.watch('/never'); print('on', flush=True)"
        watcher = subprocess.Popen(
            work.command(_python(code + "; d.read_watch()")),
            env=dict(work.env),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert select.select([watcher.stdout], [], [], WAIT)[0], "the watcher did not start"
        assert watcher.stdout is not None and watcher.stdout.readline() == "on\n"
        pids = qubesdb.pids()
        holders = [qubesdb.dom0.holder_pid, work.sandbox.holder_pid]
        mount_spaces = [namespace_inode(pid, "mnt") for pid in holders]
        names = sorted(str(_name(pid)) for pid in pids)
        # Two holders (python), the watcher, both daemons.
        assert names == ["python"] * 3 + ["qubesdb-daemon"] * 2
        assert _our_mounts(tmp_path) == mounts_before  # nothing of ours shows on the host
    finally:
        qubesdb.stop()
    watcher.wait(timeout=WAIT)
    watcher.stdout.close()

    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    assert [pids_in_namespace("mnt", inode) for inode in mount_spaces if inode] == [[], []]
    assert _our_mounts(tmp_path) == mounts_before
    assert not (tmp_path / "vchan").exists()
