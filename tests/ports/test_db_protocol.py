"""Our protocol over a qube's DB (`qubes_portfwd.db`): dom0 commits with a marker written
last, the agent reports with the handled counter written last, everything dom0 reads back
is validated. Run over the lab's adapter."""

import threading
from pathlib import Path

import pytest

from qubes_lab.qube_db import FileQubeDb
from qubes_portfwd.db.dom0 import Dom0Channel
from qubes_portfwd.db.qube import QubeChannel
from qubes_portfwd.model.db_layout import HANDLED, MARKER, NO_STATUS, STATUS_PREFIX
from qubes_portfwd.ports.qube_db import QubeDbTimeout

PREFIXES = ("/qubes-portfwd/", "/qubes-firewall/")
KEY = "/qubes-portfwd/0123456789ab/4"
OTHER = "/qubes-portfwd/ba9876543210/4"


class Recorder(FileQubeDb):
    """The lab's adapter, remembering the order of writes and removals."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[tuple[str, str]] = []

    def write(self, path: str, value: bytes) -> None:
        self.calls.append(("write", path))
        super().write(path, value)

    def rm(self, path: str) -> None:
        self.calls.append(("rm", path))
        super().rm(path)


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Dom0Channel, QubeChannel, Recorder, Recorder]:
    dom0_db, qube_db = Recorder(tmp_path / "q"), Recorder(tmp_path / "q")
    return Dom0Channel(dom0_db, "work"), QubeChannel(qube_db), dom0_db, qube_db


def test_dom0_writes_only_what_changed_and_the_marker_last(sides) -> None:  # type: ignore[no-untyped-def]
    dom0, qube, dom0_db, _ = sides
    assert dom0.replace_prefixes(PREFIXES, {KEY: "a", OTHER: "b"}) == 1
    dom0_db.calls.clear()
    assert dom0.replace_prefixes(PREFIXES, {KEY: "a2"}) == 2
    assert dom0_db.calls == [("rm", OTHER), ("write", KEY), ("write", MARKER)]
    assert qube.read() == (2, {KEY: "a2"})


def test_the_agent_reports_statuses_then_the_handled_counter(sides) -> None:  # type: ignore[no-untyped-def]
    dom0, qube, _, qube_db = sides
    generation = dom0.replace_prefixes(PREFIXES, {KEY: "a", OTHER: "b"})
    qube.write_status(generation, {KEY: "applied", OTHER: "bad\nline"}, "nft said\nno")
    assert qube_db.calls[-1] == ("write", HANDLED)
    status = dom0.read_status()
    assert (status.handled, status.error) == (generation, "nft said no")
    assert dict(status.per_key) == {KEY: "applied", OTHER: "bad line"}
    assert status.updated > 0
    qube_db.calls.clear()
    qube.write_status(generation, {KEY: "applied"}, None)  # only the change is written
    assert ("write", STATUS_PREFIX + KEY) not in qube_db.calls
    assert ("rm", STATUS_PREFIX + OTHER) in qube_db.calls
    assert dict(dom0.read_status().per_key) == {KEY: "applied"}


def test_a_malformed_report_counts_as_none(sides) -> None:  # type: ignore[no-untyped-def]
    dom0, _, _, qube_db = sides
    qube_db.write(HANDLED, b"12abc")
    assert dom0.read_status() == NO_STATUS
    qube_db.write(HANDLED, b"9" * 40)
    assert dom0.read_status() == NO_STATUS
    qube_db.write(HANDLED, b"3")
    qube_db.write(STATUS_PREFIX + "/qubes-ip", b"applied")  # not an entry of ours: ignored
    assert dom0.read_status().per_key == {}


def test_waiting_for_the_handled_counter_wakes_on_its_write(sides) -> None:  # type: ignore[no-untyped-def]
    dom0, qube, _, _ = sides
    generation = dom0.replace_prefixes(PREFIXES, {KEY: "a"})
    writer = threading.Timer(0.05, qube.write_status, (generation, {KEY: "applied"}, None))
    writer.start()
    try:
        assert dom0.wait_for_handled(generation, 5.0).per_key[KEY] == "applied"
    finally:
        writer.join()
    with pytest.raises(QubeDbTimeout, match="work"):
        dom0.wait_for_handled(generation + 1, 0.1)


def test_public_endpoints_reach_dom0_and_change_its_token(sides) -> None:  # type: ignore[no-untyped-def]
    dom0, qube, _, _ = sides
    before = dom0.state_token()
    qube.write_public({"/qubes-portfwd-public/0123456789ab/tcp/80": "198.51.100.7:40001"})
    assert dom0.read_public() == {"/qubes-portfwd-public/0123456789ab/tcp/80": "198.51.100.7:40001"}
    assert dom0.state_token() != before
    qube.write_public({})
    assert dom0.read_public() == {}


def test_a_key_qubesdb_cannot_hold_is_refused_and_nothing_is_written(sides) -> None:  # type: ignore[no-untyped-def]
    dom0, _, dom0_db, _ = sides
    with pytest.raises(ValueError, match="entry"):
        dom0.replace_prefixes(PREFIXES, {KEY: "a", "/qubes-portfwd/" + "x" * 60: "b"})
    assert dom0_db.calls == []
    with pytest.raises(ValueError, match="outside"):
        dom0.replace_prefixes(PREFIXES, {"/qubes-ip": "1"})
