"""The admin service on a temp socket answers garbage, truncated, stalled and oversized
requests with an error reply, and keeps serving (a real `qubes-lab-qubesd` process)."""

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from data_safety.admind_process import AdmindFiles, kill_hard
from qubes_lab.qubesd import wire

from .limits import examples
from .mutations import near
from .seeds import SEEDS

REQUEST_TIMEOUT = 1.0
REPLY_TIMEOUT = 10.0
LIST = b"admin.vm.List+ dom0 name dom0\0"


@pytest.fixture(scope="module")
def admind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AdmindFiles, int]]:
    files = AdmindFiles(tmp_path_factory.mktemp("garbage"))
    process = files.start("--request-timeout", str(REQUEST_TIMEOUT))
    try:
        yield files, process.pid
    finally:
        kill_hard(process.pid)


def exchange(path: Path, data: bytes, *, half_close: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(str(path))
        # The service may answer and close before taking it all.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def still_serving(files: AdmindFiles, pid: int) -> None:
    os.kill(pid, 0)  # raises if the service died
    assert exchange(files.socket_path, LIST).startswith(wire.OK_PREFIX)


def protocol_error(reply: bytes) -> str:
    assert reply.startswith(wire.ERROR_PREFIX), reply[:80]
    fields = reply[len(wire.ERROR_PREFIX) :].split(b"\0")
    assert fields[0] == b"ProtocolError", fields[:3]
    return fields[2].decode()


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=near(SEEDS["admin_wire"]))
def test_any_bytes_get_a_reply_and_the_service_goes_on(admind, data: bytes) -> None:  # type: ignore[no-untyped-def]
    files, pid = admind
    reply = exchange(files.socket_path, data)
    assert reply[:2] in (wire.OK_PREFIX, wire.ERROR_PREFIX), reply[:80]
    assert b"Traceback" not in reply and b"internal error" not in reply
    still_serving(files, pid)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"admin.vm.List+ dom0 na", "before the header's NUL"),
        (b"x" * (wire.MAX_HEADER + 50), "header longer than"),
        (LIST[:-1] + b" extra\0", "header must be"),
        (b"admin.vm.List+ dom0 name dom0\xff\0", "not ASCII"),
        (LIST + b"x" * (wire.MAX_PAYLOAD + 1), "payload larger than"),
        (b"", "before the header's NUL"),
    ],
)
def test_bad_framing_is_a_protocol_error(admind, data: bytes, says: str) -> None:  # type: ignore[no-untyped-def]
    files, pid = admind
    assert says in protocol_error(exchange(files.socket_path, data))
    still_serving(files, pid)


def test_a_stalled_client_times_out_with_an_error(admind) -> None:  # type: ignore[no-untyped-def]
    files, pid = admind
    reply = exchange(files.socket_path, b"admin.vm.List+ dom0", half_close=False)
    assert "not complete within" in protocol_error(reply)
    still_serving(files, pid)


def test_clients_that_vanish_mid_request_do_not_stop_it(admind) -> None:  # type: ignore[no-untyped-def]
    files, pid = admind
    for data in (b"", LIST[:10], LIST + b"x" * 100_000):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(files.socket_path))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
            sock.send(data[:65536])
    still_serving(files, pid)


def test_many_garbage_clients_at_once(admind) -> None:  # type: ignore[no-untyped-def]
    files, pid = admind
    replies: list[bytes] = []

    def one(n: int) -> None:
        replies.append(exchange(files.socket_path, os.urandom(n * 37 % 5000)))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(replies) == 40 and all(r.startswith(wire.ERROR_PREFIX) for r in replies)
    still_serving(files, pid)
