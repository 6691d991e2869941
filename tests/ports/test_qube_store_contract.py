"""The qube store port's contract, run against every adapter (today: the lab's file store)."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qubes_lab.entry_store import EntryStore
from qubes_portfwd.ports.qube_store import (
    NO_STATUS,
    STATUS_APPLIED,
    Dom0Side,
    QubeSide,
    StoreTimeout,
)

KEY = "/qubes-portfwd/0123456789ab/4"
OTHER = "/qubes-firewall/10.137.0.6/policy"

Adapter = Callable[[Path], tuple[Dom0Side, QubeSide]]


def lab_adapter(tmp: Path) -> tuple[Dom0Side, QubeSide]:
    """Dom0's and the qube's handles on one store, as the lab opens them."""
    return EntryStore(tmp / "work"), EntryStore(tmp / "work")


@pytest.fixture(params=[lab_adapter], ids=["lab"])
def sides(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Dom0Side, QubeSide]]:
    yield request.param(tmp_path)


def test_a_fresh_store_is_empty_with_no_report(sides: tuple[Dom0Side, QubeSide]) -> None:
    dom0, qube = sides
    assert qube.read() == (0, {})
    assert dom0.read_status() == NO_STATUS
    assert dom0.read_public() == {}


def test_published_entries_reach_the_qube_with_a_new_generation(
    sides: tuple[Dom0Side, QubeSide],
) -> None:
    dom0, qube = sides
    before = qube.change_token()
    generation = dom0.replace_prefixes(["/qubes-portfwd/"], {KEY: "role=accept"})
    assert generation > 0
    assert qube.read() == (generation, {KEY: "role=accept"})
    assert qube.change_token() != before


def test_a_publish_replaces_only_its_prefixes(sides: tuple[Dom0Side, QubeSide]) -> None:
    dom0, qube = sides
    dom0.replace_prefixes(["/qubes-firewall/"], {OTHER: "drop"})
    first = dom0.replace_prefixes(["/qubes-portfwd/"], {KEY: "a"})
    second = dom0.replace_prefixes(["/qubes-portfwd/"], {})
    assert second > first
    assert qube.read() == (second, {OTHER: "drop"})


def test_the_qubes_report_reaches_dom0(sides: tuple[Dom0Side, QubeSide]) -> None:
    dom0, qube = sides
    generation = dom0.replace_prefixes(["/qubes-portfwd/"], {KEY: "a"})
    token = dom0.state_token()
    qube.write_status(generation, {KEY: STATUS_APPLIED}, None)
    status = dom0.wait_for_handled(generation, timeout=5.0)
    assert status.handled == generation and status.per_key == {KEY: STATUS_APPLIED}
    assert status.failed_keys == {}
    assert dom0.state_token() != token


def test_a_failed_key_and_an_error_are_reported(sides: tuple[Dom0Side, QubeSide]) -> None:
    dom0, qube = sides
    generation = dom0.replace_prefixes(["/qubes-portfwd/"], {KEY: "a"})
    qube.write_status(generation, {KEY: "nft: no such table"}, "apply failed")
    status = dom0.read_status()
    assert status.failed_keys == {KEY: "nft: no such table"}
    assert status.error == "apply failed"


def test_waiting_for_an_unhandled_generation_is_bounded(sides: tuple[Dom0Side, QubeSide]) -> None:
    dom0, qube = sides
    generation = dom0.replace_prefixes(["/qubes-portfwd/"], {KEY: "a"})
    qube.write_status(generation - 1, {}, None)
    with pytest.raises(StoreTimeout):
        dom0.wait_for_handled(generation, timeout=0.1)


def test_public_endpoints_reach_dom0(sides: tuple[Dom0Side, QubeSide]) -> None:
    dom0, qube = sides
    endpoints = {"/qubes-portfwd-public/0123456789ab/tcp/80": "198.51.100.9:41000"}
    qube.write_public(endpoints)
    assert dom0.read_public() == endpoints
