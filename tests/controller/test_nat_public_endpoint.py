"""dom0 waits for a tunnel keeper's public endpoint on a watch of the edge's DB (the lab's
real QubesDB stand-in, no root): woken by the keeper's write, bounded, no sleep loop."""

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qubes_lab.qube_db import FileQubeDb
from qubes_portfwd.controller import nat_requests
from qubes_portfwd.controller.publisher import Publisher
from qubes_portfwd.db.qube import QubeChannel
from qubes_portfwd.model.forward_status import PUBLIC_PREFIX

FID = "0123456789ab"
KEY = f"{PUBLIC_PREFIX}{FID}/tcp/18080"


class ReadSignallingDb(FileQubeDb):
    """The lab's DB handle, saying when its reader first looked (so the test writes after)."""

    def __init__(self, path: Path, looked: threading.Event) -> None:
        super().__init__(path)
        self.looked = looked

    def multiread(self, prefix: str) -> dict[str, bytes]:
        values = super().multiread(prefix)
        if prefix == PUBLIC_PREFIX:
            self.looked.set()
        return values


@pytest.fixture
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep of a positive delay, recorded: a poll loop shows up here."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        if delay > 0:
            slept.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    return slept


def _controller(tmp_path: Path, looked: threading.Event) -> Any:
    """What tunnel_endpoint uses of the controller: its publisher, over the lab's DBs."""
    publisher = Publisher(lambda qube: ReadSignallingDb(tmp_path / qube, looked), 1.0)
    return SimpleNamespace(publisher=publisher)


async def _wait_then_keeper_writes(tmp_path: Path, entries: dict[str, str]) -> object:
    looked = threading.Event()
    service = _controller(tmp_path, looked)
    waiting = asyncio.ensure_future(
        nat_requests.tunnel_endpoint(service, "sys-vpn", FID, "tcp", 18080)
    )
    assert await asyncio.to_thread(looked.wait, 30), "the wait never read the DB"
    keeper = QubeChannel(FileQubeDb(tmp_path / "sys-vpn"))
    for key, value in entries.items():  # one write each: every one wakes the wait
        await asyncio.to_thread(keeper.write_public, {key: value})
    return await asyncio.wait_for(waiting, 30)


def test_the_keepers_write_wakes_the_wait(tmp_path: Path, no_sleeping: list[float]) -> None:
    entries = {
        f"{PUBLIC_PREFIX}{FID}/tcp/18081": "198.51.100.7:40000",  # another port of it
        f"{PUBLIC_PREFIX}{FID}/tcp/18080": "not-an-endpoint",  # a bad value: skipped
        KEY: "198.51.100.7:40123",
    }
    found = asyncio.run(_wait_then_keeper_writes(tmp_path, entries))
    assert found == ("198.51.100.7", 40123)
    assert no_sleeping == []


def test_an_endpoint_already_there_answers_at_once(
    tmp_path: Path, no_sleeping: list[float]
) -> None:
    QubeChannel(FileQubeDb(tmp_path / "sys-vpn")).write_public({KEY: "198.51.100.9:40001"})
    service = _controller(tmp_path, threading.Event())
    found = asyncio.run(nat_requests.tunnel_endpoint(service, "sys-vpn", FID, "tcp", 18080))
    assert found == ("198.51.100.9", 40001) and no_sleeping == []


def test_no_endpoint_within_the_bound_answers_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleeping: list[float]
) -> None:
    monkeypatch.setattr(nat_requests, "PUBLIC_ENDPOINT_WAIT", 0.3)
    entries = {f"{PUBLIC_PREFIX}{FID}/udp/18080": "198.51.100.7:40000"}  # udp, not tcp
    assert asyncio.run(_wait_then_keeper_writes(tmp_path, entries)) is None
    assert no_sleeping == []
