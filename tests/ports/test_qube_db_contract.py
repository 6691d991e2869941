"""Contract of the port `ports.qube_db` (a qube's QubesDB), run against every adapter: the
lab's file store now; issue 16 adds real QubesDB daemons over vchan-socket."""

import asyncio
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qubes_lab.qube_db import FileQubeDb
from qubes_lab.qubesdb_real import RealQubesDB
from qubes_portfwd.adapters.qubesdb_binding import QubesDbBinding
from qubes_portfwd.db.watch import next_watch, wait_until
from qubes_portfwd.ports.qube_db import QubeDb, QubeDbTimeout

# (a handle for dom0's side, a handle for the qube's side) on one fresh DB.
Adapter = Callable[[Path], tuple[QubeDb, QubeDb]]
WAIT = 5.0  # bound on every wait for a watch


def lab_adapter(tmp: Path) -> tuple[QubeDb, QubeDb]:
    return FileQubeDb(tmp / "work"), FileQubeDb(tmp / "work")


def real_adapter(qubesdb: RealQubesDB) -> tuple[QubeDb, QubeDb]:
    """Qubes' `qubesdb` binding in dom0's and the qube's namespaces, real daemons between."""
    work = qubesdb.add_qube("work", 5)
    return qubesdb.call_in_dom0(lambda: QubesDbBinding("work")), work.call_inside(QubesDbBinding)


@pytest.fixture(
    params=[lab_adapter, pytest.param(real_adapter, marks=pytest.mark.lab)], ids=["lab", "real"]
)
def dbs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[QubeDb, QubeDb]]:
    if request.param is real_adapter:  # started and stopped by the real_qubesdb fixture
        yield real_adapter(request.getfixturevalue("real_qubesdb"))
        return
    yield request.param(tmp_path)


def _fired(db: QubeDb, timeout: float = WAIT) -> list[str]:
    """Every path that fired once the descriptor turned readable (bounded)."""
    readable, _, _ = select.select([db.watch_fd()], [], [], timeout)
    assert readable, "the watch descriptor stayed quiet"
    paths = []
    while (path := db.read_watch()) is not None:
        paths.append(path)
        if not select.select([db.watch_fd()], [], [], 0.2)[0]:
            break
    return paths


def test_a_fresh_db_is_empty(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, _ = dbs
    assert dom0.read("/qubes-portfwd") is None
    assert dom0.multiread("/") == {}
    assert dom0.list("/") == []


def _reaches(db: QubeDb, prefix: str, condition: Callable[[], bool]) -> None:
    """Wait (bounded, woken by a watch) until `condition` holds on `db`: a write reaches the
    other side's daemon later (over vchan), in order."""
    db.watch(prefix)
    wait_until(db, lambda: True if condition() else None, WAIT, f"{prefix} on the other side")


def test_writes_are_read_back_by_the_other_handle(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, qube = dbs
    dom0.write("/qubes-portfwd/a1b2c3d4e5f6/4", b"role=accept family=4")
    dom0.write("/qubes-ip", b"10.137.0.5")
    assert dom0.read("/qubes-ip") == b"10.137.0.5"  # the writer's own side: at once
    _reaches(qube, "/", lambda: qube.read("/qubes-ip") == b"10.137.0.5")
    assert qube.read("/qubes-portfwd/a1b2c3d4e5f6/4") == b"role=accept family=4"  # in order
    qube.write("/qubes-portfwd-handled", b"1")
    _reaches(dom0, "/", lambda: dom0.read("/qubes-portfwd-handled") == b"1")
    dom0.write("/qubes-ip", b"10.137.0.6")  # overwrite
    _reaches(qube, "/", lambda: qube.read("/qubes-ip") == b"10.137.0.6")


def test_multiread_and_list_match_a_plain_prefix(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, qube = dbs
    for path in ("/qubes-portfwd/b/4", "/qubes-portfwd/a/4", "/qubes-portfwd-public/a/tcp/80"):
        dom0.write(path, path.encode())
    _reaches(qube, "/", lambda: len(qube.list("/qubes-portfwd")) == 3)
    assert qube.multiread("/qubes-portfwd/") == {
        "/qubes-portfwd/a/4": b"/qubes-portfwd/a/4",
        "/qubes-portfwd/b/4": b"/qubes-portfwd/b/4",
    }
    assert qube.list("/qubes-portfwd") == [
        "/qubes-portfwd-public/a/tcp/80",
        "/qubes-portfwd/a/4",
        "/qubes-portfwd/b/4",
    ]


def test_rm_removes_a_key_or_a_subtree(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, qube = dbs
    for path in ("/x", "/x/a", "/x/b/c", "/xy"):
        dom0.write(path, b"1")
    dom0.rm("/x")  # exact: the subtree stays
    dom0.write("/done", b"1")
    _reaches(qube, "/", lambda: qube.read("/done") == b"1")
    assert qube.list("/x") == ["/x/a", "/x/b/c", "/xy"]
    dom0.rm("/x/")  # trailing slash: the subtree goes
    dom0.rm("/absent")  # no error
    dom0.rm("/absent/")
    dom0.write("/done", b"2")
    _reaches(qube, "/", lambda: qube.read("/done") == b"2")
    assert qube.list("/") == ["/done", "/xy"]


def test_values_are_bytes_and_kept_exactly(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, qube = dbs
    dom0.write("/empty", b"")
    dom0.write("/text", b"a b\nc\td")
    _reaches(qube, "/", lambda: qube.read("/text") is not None)
    assert qube.read("/empty") == b""
    assert qube.read("/text") == b"a b\nc\td"


def test_an_exact_watch_fires_on_write_and_rm_of_that_path_only(
    dbs: tuple[QubeDb, QubeDb],
) -> None:
    dom0, qube = dbs
    qube.watch("/qubes-portfwd")
    dom0.write("/qubes-portfwd/a/4", b"entry")  # under it: not the marker
    dom0.write("/qubes-portfwd", b"1")
    assert _fired(qube) == ["/qubes-portfwd"]
    dom0.rm("/qubes-portfwd")
    assert _fired(qube) == ["/qubes-portfwd"]


def test_a_prefix_watch_fires_for_paths_under_it(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, qube = dbs
    dom0.watch("/qubes-portfwd-public/")
    qube.write("/qubes-portfwd-public/a/tcp/80", b"198.51.100.1:40000")
    assert _fired(dom0) == ["/qubes-portfwd-public/a/tcp/80"]
    qube.rm("/qubes-portfwd-public/")
    assert _fired(dom0) == ["/qubes-portfwd-public/"]


def test_a_handle_sees_its_own_writes_fire(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, _ = dbs
    dom0.watch("/qubes-portfwd")
    dom0.write("/qubes-portfwd", b"7")
    assert _fired(dom0) == ["/qubes-portfwd"]


def test_an_awaited_watch_wakes_on_a_write_from_another_thread(
    dbs: tuple[QubeDb, QubeDb],
) -> None:
    dom0, qube = dbs
    qube.watch("/qubes-portfwd")

    async def scenario() -> str | None:
        # A wake that concerned no watched path answers None (the lab's log file being
        # created just before the write is one), so wait on until a path or the bound.
        writer = threading.Timer(0.05, lambda: dom0.write("/qubes-portfwd", b"2"))
        writer.start()
        deadline = time.monotonic() + WAIT
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if (path := await next_watch(qube, timeout=remaining)) is not None:
                    return path
            return None
        finally:
            writer.join()

    assert asyncio.run(scenario()) == "/qubes-portfwd"


def test_an_awaited_watch_is_bounded_and_interruptible(dbs: tuple[QubeDb, QubeDb]) -> None:
    _, qube = dbs
    qube.watch("/qubes-portfwd")

    async def scenario() -> tuple[str | None, str | None]:
        quiet = await next_watch(qube, timeout=0.05)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        interrupted = await next_watch(qube, timeout=WAIT, interrupt=stop)
        return quiet, interrupted

    assert asyncio.run(scenario()) == (None, None)


def test_a_blocking_wait_sees_the_other_sides_counter(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, qube = dbs
    dom0.watch("/qubes-portfwd-handled")
    writer = threading.Timer(0.05, lambda: qube.write("/qubes-portfwd-handled", b"3"))
    writer.start()
    try:
        got = wait_until(
            dom0, lambda: dom0.read("/qubes-portfwd-handled") == b"3" or None, WAIT, "handled"
        )
    finally:
        writer.join()
    assert got is True


def test_a_blocking_wait_is_bounded(dbs: tuple[QubeDb, QubeDb]) -> None:
    dom0, _ = dbs
    dom0.watch("/qubes-portfwd-handled")
    with pytest.raises(QubeDbTimeout, match="handled"):
        wait_until(dom0, lambda: dom0.read("/qubes-portfwd-handled"), 0.1, "handled")


@pytest.mark.parametrize("path", ["relative", "/with space", "/" + "x" * 64, "/bad\nline"])
def test_a_path_qubesdb_refuses_is_refused(dbs: tuple[QubeDb, QubeDb], path: str) -> None:
    dom0, _ = dbs
    with pytest.raises(ValueError, match="path"):
        dom0.write(path, b"1")
    assert dom0.list("/") == []
