"""The per-qube entry store: atomic documents, no lost updates, bounded waits."""

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from qubes_lab.entry_store import EntryStore, StoreTimeout

WRITERS = 4
WRITES_EACH = 25


def _write_many(path: str, writer: int) -> None:
    store = EntryStore(path)
    for number in range(WRITES_EACH):
        store.set(f"/test/{writer}/{number}", str(number))


def test_empty_store_reads_generation_zero(tmp_path: Path) -> None:
    assert EntryStore(tmp_path / "q").read() == (0, {})


def test_every_write_raises_the_generation(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    generations = [store.set("/name", "work"), store.set("/a", "1"), store.delete("/a")]
    assert generations == [1, 2, 3]
    assert store.read() == (3, {"/name": "work"})


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "q")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(path, w)) for w in range(WRITERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    generation, entries = EntryStore(path).read()
    assert generation == WRITERS * WRITES_EACH
    assert len(entries) == WRITERS * WRITES_EACH


def test_replace_prefixes_keeps_other_owners_keys(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    store.set_many({"/name": "sys-net", "/qubes-portfwd/aaaaaaaaaaaa/4": "old"})
    store.replace_prefixes(
        ["/qubes-portfwd/", "/qubes-firewall/"], {"/qubes-firewall/10.137.0.6/policy": "drop"}
    )
    assert store.read()[1] == {"/name": "sys-net", "/qubes-firewall/10.137.0.6/policy": "drop"}


def test_replace_prefixes_refuses_keys_outside_them(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    with pytest.raises(ValueError, match="outside"):
        store.replace_prefixes(["/qubes-portfwd/"], {"/name": "evil"})
    assert store.read() == (0, {})


def test_replace_prefixes_refuses_a_bad_entry_among_held_ones_and_changes_nothing(
    tmp_path: Path,
) -> None:
    store = EntryStore(tmp_path / "q")
    held = {f"/qubes-portfwd/{n:012x}/4": f"v{n}" for n in range(5)}
    before = store.replace_prefixes(["/qubes-portfwd/"], held)
    wanted = {
        **{key: "changed" for key in held},  # valid changes, checked before the bad one
        "/qubes-portfwd/" + "a" * 60: "too long a path",
    }
    with pytest.raises(ValueError, match="QubesDB path"):
        store.replace_prefixes(["/qubes-portfwd/"], wanted)
    assert store.read() == (before, held)


def test_wait_for_change_times_out(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    store.set("/name", "work")
    with pytest.raises(StoreTimeout):
        store.wait_for_change(1, timeout=0.2)


def test_wait_for_change_sees_a_write_from_elsewhere(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    store.set("/name", "work")
    writer = threading.Timer(0.1, lambda: EntryStore(tmp_path / "q").set("/x", "1"))
    writer.start()
    try:
        assert store.wait_for_change(1, timeout=10) == 2
    finally:
        writer.cancel()


def test_wait_for_change_returns_at_once_when_already_newer(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    store.set("/a", "1")
    store.set("/a", "2")
    assert store.wait_for_change(0, timeout=0) == 2


def test_status_round_trip_and_wait_for_handled(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    assert store.read_status().handled == 0
    with pytest.raises(StoreTimeout):
        store.wait_for_handled(1, timeout=0.1)
    key = "/qubes-portfwd/aaaaaaaaaaaa/4"
    store.write_status(3, {key: "applied", "/qubes-portfwd/bbbbbbbbbbbb/4": "ports: bad"}, None)
    status = store.wait_for_handled(2, timeout=1)
    assert status.handled == 3
    assert status.per_key[key] == "applied"
    assert status.failed_keys == {"/qubes-portfwd/bbbbbbbbbbbb/4": "ports: bad"}
    assert status.error is None


def test_a_reader_never_sees_a_torn_document(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "q")
    big = {f"/qubes-portfwd/{n:012x}/4": "x" * 200 for n in range(500)}
    stop = time.monotonic() + 1.0
    errors: list[Exception] = []

    def keep_reading() -> None:
        while time.monotonic() < stop:
            try:
                generation, entries = store.read()
                assert generation == 0 or len(entries) == 500
            except Exception as err:  # collected and asserted in the main thread
                errors.append(err)
                return

    reader = threading.Thread(target=keep_reading)
    reader.start()
    while time.monotonic() < stop:
        store.replace_prefixes(["/qubes-portfwd/"], big)
    reader.join(timeout=10)
    assert errors == []
