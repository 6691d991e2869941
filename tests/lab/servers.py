"""Servers and clients inside a lab's namespaces, for tests: started, polled until they
listen (bounded), stopped with their whole process group however the test ends."""

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from qubes_lab.builder import Lab

LISTEN_TIMEOUT = 5.0
CONNECT_TIMEOUT = 1.0  # seconds; every attempt that must fail costs this much
POLL = 0.02

# Answers each TCP connection or UDP datagram with the client address it sees (dual stack).
PEER_SERVER = r"""
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port))
def shown(peer):
    return peer[0].removeprefix("::ffff:").encode() + b"\n"
if proto == "tcp":
    s.listen(64)
    while True:
        c, peer = s.accept()
        with c:
            c.sendall(shown(peer))
else:
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(shown(peer), peer)
"""

CLIENT = r"""
import socket, sys
proto, host, port, source, timeout = sys.argv[1:6]
af = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(af, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(float(timeout))
if source:
    s.bind((source, 0))
try:
    if proto == "tcp":
        s.connect((host, int(port)))
        print(s.recv(200).decode().strip())
    else:
        s.sendto(b"hello", (host, int(port)))
        print(s.recvfrom(200)[0].decode().strip())
except OSError as e:
    print("FAIL", type(e).__name__, e)
    sys.exit(1)
"""


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition()` until true or `timeout` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def listening(lab: Lab, host: str, proto: str, port: int) -> bool:
    flag = "-Hltn" if proto == "tcp" else "-Hlun"
    out = lab.run(host, ["ss", flag, f"sport = :{port}"], capture_output=True, text=True)
    return f":{port}" in out.stdout


@contextmanager
def background(lab: Lab, host: str, argv: Sequence[str]) -> Iterator[subprocess.Popen[str]]:
    """A process in `host` in its own session, killed with its process group at the end.

    The group matters: servers that fork per connection leave children behind otherwise.
    """
    process = lab.popen(
        host,
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@contextmanager
def serving(
    lab: Lab, host: str, argv: Sequence[str], proto: str, port: int
) -> Iterator[subprocess.Popen[str]]:
    """`argv` running in `host`, yielded once it listens on proto/port (bounded)."""
    with background(lab, host, argv) as process:
        ready = wait_for(
            lambda: process.poll() is not None or listening(lab, host, proto, port),
            LISTEN_TIMEOUT,
        )
        assert process.poll() is None, f"server in {host} exited: {process.stdout.read()}"  # type: ignore[union-attr]
        assert ready, f"server in {host} not listening on {proto}/{port}"
        yield process


@contextmanager
def peer_server(lab: Lab, host: str, proto: str, port: int) -> Iterator[None]:
    """A server in `host` answering every client with the client's address as it sees it."""
    argv = [sys.executable, "-c", PEER_SERVER, proto, str(port)]
    with serving(lab, host, argv, proto, port):
        yield


def ask(
    lab: Lab,
    host: str,
    proto: str,
    address: object,
    port: int,
    source: object = "",
    timeout: float = CONNECT_TIMEOUT,
) -> str | None:
    """The client address a peer server reported, or None when nothing came back."""
    argv = [sys.executable, "-c", CLIENT, proto, str(address), str(port), str(source)]
    done = lab.run(
        host, [*argv, str(timeout)], capture_output=True, text=True, timeout=timeout + 10
    )
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return str(ipaddress.ip_address(done.stdout.strip()))
