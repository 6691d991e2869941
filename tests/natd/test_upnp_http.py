"""natd's UPnP HTTP server on loopback (no root), fed raw requests: ambiguous framing is a
400 (never a guess, never a 500), and one client holding connections open leaves another
client served."""

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from qubes_portfwd.natd import http_server
from qubes_portfwd.natd.dom0 import Answer, Ask
from qubes_portfwd.natd.mappings import MappingTable
from qubes_portfwd.natd.upnp_actions import WanIpConnection
from qubes_portfwd.natd.upnp_soap import CONTROL_PATH, DESCRIPTION_PATH, WANIP_SERVICE

REPLY_TIMEOUT = 10.0

STATUS_BODY = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    f'<s:Body><u:GetStatusInfo xmlns:u="{WANIP_SERVICE}"/></s:Body></s:Envelope>'
).encode()


async def _never_asked(ask: Ask) -> Answer:
    raise AssertionError(f"dom0 asked for {ask}: these requests never get that far")


async def _no_address(_: object) -> ipaddress.IPv4Address:
    raise AssertionError("dom0 asked for an address")


@contextmanager
def running_server() -> Iterator[int]:
    """The real server in a loop of its own thread; yields its port on 127.0.0.1."""
    loop = asyncio.new_event_loop()
    actions = WanIpConnection(_never_asked, _no_address, MappingTable())  # type: ignore[arg-type]
    server, port = loop.run_until_complete(http_server.start(actions, "127.0.0.1", 0, "test"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def stop() -> None:
        server.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def exchange(port: int, raw: bytes, source: str = "127.0.0.1") -> str:
    """The status line answering `raw` sent on one connection from `source`."""
    with socket.create_connection(("127.0.0.1", port), REPLY_TIMEOUT, (source, 0)) as conn:
        conn.sendall(raw)
        reply = b""
        while b"\r\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0].decode()


def post(*fields: str, body: bytes = STATUS_BODY) -> bytes:
    head = f"POST {CONTROL_PATH} HTTP/1.1\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n"
    return head.encode() + body


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with running_server() as bound:
        yield bound


def test_a_well_formed_call_is_answered(port: int) -> None:
    host = "Host: 127.0.0.1"
    assert exchange(port, post(host, f"Content-Length: {len(STATUS_BODY)}")) == "HTTP/1.1 200 OK"
    assert exchange(port, post(host, body=b"")) == "HTTP/1.1 411 Length Required"
    get = f"GET {DESCRIPTION_PATH} HTTP/1.1\r\n{host}\r\n\r\n".encode()
    assert exchange(port, get) == "HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    "fields",
    [
        # The finding: a second Content-Length, equal or not, was read as the last one.
        ("Content-Length: {n}", "Content-Length: {n}"),
        ("Content-Length: {n}", "Content-Length: 0"),
        ("Content-Length: 0", "Content-Length: {n}"),
        ("Content-Length: {n}, {n}",),
        ("Content-Length: +{n}",),
        # Whitespace before the colon: a proxy may not see the field a server would.
        ("Content-Length : {n}",),
        ("Content-Length: {n}", "Transfer-Encoding: chunked"),
        ("Host: 127.0.0.1", "Host: 127.0.0.2", "Content-Length: {n}"),
        # Obsolete line folding, and a line that is no field at all.
        ("Content-Length: {n}", "X-Folded: a", " b"),
        ("Content-Length: {n}", "no colon here"),
    ],
)
def test_ambiguous_framing_is_a_bad_request(port: int, fields: tuple[str, ...]) -> None:
    lines = [f.format(n=len(STATUS_BODY)) for f in fields]
    assert exchange(port, post(*lines)) == "HTTP/1.1 400 Bad Request"


def test_a_transfer_coding_is_not_implemented(port: int) -> None:
    raw = post("Transfer-Encoding: chunked", body=b"0\r\n\r\n")
    assert exchange(port, raw) == "HTTP/1.1 501 Not Implemented"


def test_connections_held_by_one_client_leave_another_served() -> None:
    with running_server() as port:
        held = []
        try:
            # More idle connections than all the slots there used to be, from one client.
            for _ in range(40):
                conn = socket.create_connection(("127.0.0.1", port), REPLY_TIMEOUT)
                held.append(conn)
            last = held[-1]  # beyond this client's share: refused at once
            assert last.recv(4096).split(b"\r\n", 1)[0] == b"HTTP/1.1 503 Service Unavailable"
            get = f"GET {DESCRIPTION_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            assert exchange(port, get, source="127.0.0.2") == "HTTP/1.1 200 OK"
            # The first ones were held all along: still waiting for their request.
            first = held[0]
            first.setblocking(False)
            with pytest.raises(BlockingIOError):
                first.recv(4096)
        finally:
            for conn in held:
                conn.close()
