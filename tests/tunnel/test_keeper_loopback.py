"""The keeper against the project's provider responder over real UDP on loopback (no nft)."""

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from qubes_lab.entry_store import EntryStore
from qubes_lab.provider_leases import ProviderTable
from qubes_lab.provider_natpmp import ProviderResponder
from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.natpmp import wire
from qubes_portfwd.tunnel.keeper import LeaseKeeper
from qubes_portfwd.tunnel.natpmp_client import NatPmpClient, NatPmpError
from qubes_portfwd.tunnel.wanted import UPLINK_KEY

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
PUBLIC = ipaddress.IPv4Address("203.0.113.2")
ID = "0123456789ab"
FORWARD_KEY = f"/qubes-portfwd/{ID}/4"
PUBLIC_KEY = f"/qubes-portfwd-public/{ID}/tcp/80"
HOP = (
    "role=dnat family=4 proto=tcp in=wg0 ports=80-80 to=10.137.0.9 toports=8080-8080 "
    "srchost=0.0.0.0/0"
)
LEASE = 2
DEADLINE = 8.0


async def eventually(what: str, probe: Callable[[], object]) -> object:
    deadline = time.monotonic() + DEADLINE
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE} s"
        await asyncio.sleep(0.02)
    return value


@asynccontextmanager
async def responder() -> AsyncIterator[tuple[ProviderResponder, int, list[str]]]:
    scripts: list[str] = []

    def load(script: str) -> bool:
        scripts.append(script)
        return True

    table = ProviderTable({}, PortRange(40000, 40999), LEASE)
    server = ProviderResponder(
        PUBLIC, ipaddress.IPv4Network("127.0.0.0/8"), table, "eth0", load_rules=load
    )
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: server, local_addr=(str(LOOPBACK), 0)
    )
    try:
        yield server, transport.get_extra_info("sockname")[1], scripts
    finally:
        transport.close()


@asynccontextmanager
async def keeper(store: EntryStore, port: int) -> AsyncIterator[LeaseKeeper]:
    client = NatPmpClient(LOOPBACK, port, first_timeout=0.1, attempts=3)
    await client.open()
    lease_keeper = LeaseKeeper(store.file_db, client)
    stop = asyncio.Event()
    task = asyncio.create_task(lease_keeper.run(stop))
    try:
        yield lease_keeper
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE)
        client.close()


def test_keeper_maps_follows_a_rotation_and_releases(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "sys-vpn")
    store.set_many({UPLINK_KEY: "wg0", FORWARD_KEY: HOP})

    async def scenario() -> None:
        async with responder() as (server, port, scripts), keeper(store, port):
            endpoint = await eventually("mapping", lambda: store.read_public().get(PUBLIC_KEY))
            address, first = str(endpoint).split(":")
            assert address == str(PUBLIC) and 40000 <= int(first) <= 40999
            assert f"{first} : 127.0.0.1 . 80" in scripts[-1]

            server.rotate()
            await eventually("new port", lambda: store.read_public()[PUBLIC_KEY] != endpoint)
            assert f"{first} :" not in scripts[-1]

            store.delete(FORWARD_KEY)
            await eventually("release", lambda: not store.read_public())
            assert not server.table.grants  # given back, not left to expire
        assert store.read_public() == {}

    asyncio.run(scenario())


def test_keeper_releases_everything_when_stopped(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "sys-vpn")
    store.set_many({UPLINK_KEY: "wg0", FORWARD_KEY: HOP})

    async def scenario() -> None:
        async with responder() as (server, port, _):
            async with keeper(store, port):
                await eventually("mapping", lambda: store.read_public())
            assert not server.table.grants
            assert store.read_public() == {}

    asyncio.run(scenario())


def test_silent_gateway_gives_a_bounded_error_and_publishes_nothing(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "sys-vpn")
    store.set_many({UPLINK_KEY: "wg0", FORWARD_KEY: HOP})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((str(LOOPBACK), 0))
        port = silent.getsockname()[1]

        async def scenario() -> None:
            client = NatPmpClient(LOOPBACK, port, first_timeout=0.05, attempts=3)
            started = time.monotonic()
            with pytest.raises(NatPmpError):
                await client.external_address()
            assert time.monotonic() - started < DEADLINE
            client.close()
            async with keeper(store, port) as lease_keeper:
                await eventually("a failed attempt", lambda: lease_keeper.leases)
                assert lease_keeper.leases[min(lease_keeper.leases)].error
            assert store.read_public() == {}

        asyncio.run(scenario())


def test_client_ignores_garbage_and_answers_to_other_requests() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        request = wire.MappingRequest("udp", 53, 0, 60)
        answer = wire.MappingResponse("udp", 7, 53, 40053, 60)

        class Noisy(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                assert wire.parse_request(data) == request
                for reply in (
                    b"\x00\x81garbage",
                    wire.encode_response(wire.MappingResponse("udp", 7, 54, 40054, 60)),
                    wire.encode_response(answer),
                ):
                    self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

        transport, _ = await loop.create_datagram_endpoint(Noisy, local_addr=(str(LOOPBACK), 0))
        client = NatPmpClient(LOOPBACK, transport.get_extra_info("sockname")[1])
        try:
            assert await client.map(request) == answer
        finally:
            client.close()
            transport.close()

    asyncio.run(scenario())
