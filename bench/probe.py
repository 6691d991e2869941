"""Latency probes run inside a namespace: `python -m bench.probe serve|connect|wait`.

serve: accept, send one byte, then wait for the client to close first (no server TIME_WAIT,
so PAWS never rejects a later SYN, LAB-NOTES). connect: time `count` connections' connect()
and first byte. wait: answer JSON lines on stdin `{"host", "port", "timeout"}` with the
monotonic time of the first connection that got the byte (for propagation), after a line
saying the attempts have started.
"""

import argparse
import asyncio
import errno
import json
import selectors
import socket
import sys
import time
from collections.abc import Sequence

CONGESTION = b"cubic"
GREETING = b"x"
ATTEMPT_SPACING = 0.001  # a new waiting attempt this often: the resolution of `at`
ATTEMPT_LIFETIME = 0.05  # a waiting attempt's SYN was dropped by then (the lab answers in <1 ms)


def _tcp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, CONGESTION)
    return sock


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(GREETING)
            await writer.drain()
            while await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            writer.close()

    listener = _tcp_socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(4096)
    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def _one(host: str, port: int, timeout: float) -> tuple[float, float]:
    """(connect seconds, first byte seconds); the client closes first."""
    sock = _tcp_socket()
    sock.settimeout(timeout)
    try:
        started = time.perf_counter()
        sock.connect((host, port))
        connected = time.perf_counter()
        if sock.recv(1) != GREETING:
            raise ConnectionError("no greeting")
        first_byte = time.perf_counter()
    finally:
        sock.close()
    return connected - started, first_byte - started


def connect_many(host: str, port: int, count: int, timeout: float) -> dict[str, object]:
    connect_s: list[float] = []
    first_byte_s: list[float] = []
    failures = 0
    for _ in range(count):
        try:
            took_connect, took_byte = _one(host, port, timeout)
        except OSError:
            failures += 1
            continue
        connect_s.append(took_connect)
        first_byte_s.append(took_byte)
    return {"connect_s": connect_s, "first_byte_s": first_byte_s, "failures": failures}


def wait_for_service(host: str, port: int, timeout: float) -> dict[str, object]:
    """Start a fresh connection every ATTEMPT_SPACING until one gets the greeting, for at most
    `timeout` seconds; `at` is when the first greeting came.

    Attempts overlap: a SYN a hop not yet applied drops costs no wait for the next one, so
    the time found is late by at most one spacing (one attempt at a time, each given 10 ms
    to answer, was late by up to 10 ms).
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    pending: dict[socket.socket, float] = {}  # connecting or awaiting the greeting: started
    with selectors.DefaultSelector() as selector:
        try:
            next_start = time.monotonic()
            while (now := time.monotonic()) < deadline:
                if now >= next_start:
                    attempts += 1
                    _start_attempt(selector, pending, host, port, now)
                    next_start = now + ATTEMPT_SPACING
                for sock, started in list(pending.items()):
                    if now - started > ATTEMPT_LIFETIME:
                        _end_attempt(selector, pending, sock)
                wait = max(0.0, min(next_start, deadline) - time.monotonic())
                for key, _ in selector.select(wait):
                    if _advance(selector, pending, key.fileobj):  # type: ignore[arg-type]
                        return {"ok": True, "at": time.monotonic(), "attempts": attempts}
        finally:
            for sock in list(pending):
                _end_attempt(selector, pending, sock)
    return {"ok": False, "at": time.monotonic(), "attempts": attempts}


def _start_attempt(
    selector: selectors.BaseSelector,
    pending: dict[socket.socket, float],
    host: str,
    port: int,
    now: float,
) -> None:
    sock = _tcp_socket()
    sock.setblocking(False)
    if sock.connect_ex((host, port)) not in (0, errno.EINPROGRESS):
        sock.close()
        return
    pending[sock] = now
    selector.register(sock, selectors.EVENT_WRITE)


def _end_attempt(
    selector: selectors.BaseSelector, pending: dict[socket.socket, float], sock: socket.socket
) -> None:
    selector.unregister(sock)
    del pending[sock]
    sock.close()


def _advance(
    selector: selectors.BaseSelector, pending: dict[socket.socket, float], sock: socket.socket
) -> bool:
    """One step of an attempt: connected -> wait for the greeting; greeted -> True."""
    if selector.get_key(sock).events == selectors.EVENT_WRITE:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            _end_attempt(selector, pending, sock)  # refused or unreachable: the next one
        else:
            selector.modify(sock, selectors.EVENT_READ)
        return False
    try:
        greeted = sock.recv(1) == GREETING
    except OSError:
        greeted = False
    _end_attempt(selector, pending, sock)
    return greeted


def _answer_requests() -> None:
    """Per request two lines: `{"started": <monotonic>}` as the attempts begin (so a caller
    can start what it measures after them), then the answer."""
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps({"started": time.monotonic()}), flush=True)
        reply = wait_for_service(str(request["host"]), int(request["port"]), request["timeout"])
        print(json.dumps(reply), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.probe")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--port", type=int, required=True)
    connect = sub.add_parser("connect")
    connect.add_argument("--host", required=True)
    connect.add_argument("--port", type=int, required=True)
    connect.add_argument("--count", type=int, required=True)
    connect.add_argument("--timeout", type=float, default=2.0)
    sub.add_parser("wait")
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(_serve(args.port))
    elif args.command == "connect":
        print(json.dumps(connect_many(args.host, args.port, args.count, args.timeout)))
    else:
        _answer_requests()
    return 0


if __name__ == "__main__":
    sys.exit(main())
