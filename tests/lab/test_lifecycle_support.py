"""Support for the lifecycle lab tests (no tests here): a lab driven through the admin
service's client, real servers and clients inside its namespaces, and bounded polling."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from servers import background

from lab_process import listening
from qubes_lab.builder import Lab
from qubes_lab.tools import module_of
from qubes_portfwd.client.admin_client import AdminClient

CLI_TIMEOUT = 60.0
COME_BACK_TIMEOUT = 20.0  # restarts: the admin re-plans every second, hop level by level
ABORT_TIMEOUT = 5.0  # the stream client notices a dead connection by TCP_USER_TIMEOUT
USER_TIMEOUT_MS = 200

# Streams to HOST:PORT from SOURCE until the connection dies. Prints "connected LOCALPORT",
# then, at the end, "cut T" with T the monotonic time of the last ACK it received (namespaces
# share the host's monotonic clock), so the moment the transfer stopped is measured exactly.
STREAM_CLIENT = rf"""
import socket, struct, sys, time
host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, {USER_TIMEOUT_MS})
print("connected", s.getsockname()[1], flush=True)
chunk = b"x" * 16384
last_ack = time.monotonic()
try:
    while True:
        s.sendall(chunk)
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        last_ack = time.monotonic() - struct.unpack_from("I", info, 56)[0] / 1000
        time.sleep(0.005)
except OSError as e:
    print("cut", repr(last_ack), type(e).__name__, flush=True)
"""


@dataclass(frozen=True)
class Env:
    """A lab and the user's ways into its admin service."""

    lab: Lab

    @property
    def client(self) -> AdminClient:
        return AdminClient(self.lab.admin_socket, timeout=CLI_TIMEOUT)

    def cli(self, tool: str, *argv: str) -> str:
        """Run a qvm-* CLI as a user does; its stdout (fails the test on a non-zero exit)."""
        env = {**os.environ, "QUBESD_SOCKET": str(self.lab.admin_socket)}
        done = subprocess.run(
            [sys.executable, "-m", module_of(tool), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert done.returncode == 0, f"{tool} {' '.join(argv)}: {done.stderr}"
        return done.stdout

    def fetch(self, host: str, url: str, source: str | None = None) -> str | None:
        """The page at `url` fetched by curl in `host`, or None when it is not reachable."""
        argv = ["curl", "-sS", "--max-time", "1", url]
        if source is not None:
            argv[1:1] = ["--interface", source]
        done = self.lab.run(host, argv, capture_output=True, text=True, timeout=10)
        return done.stdout if done.returncode == 0 else None

    def all_hops_applied(self, forward_id: str) -> bool:
        shown = [f for f in self.client.forwards() if f.id == forward_id]
        return bool(shown) and all(h.state == "applied" for f in shown for h in f.hops)


@contextmanager
def showing(measured: dict[str, list[float]]) -> Iterator[None]:
    """Print the delays a module measured when it ends: shown, never asserted."""
    try:
        yield
    finally:
        for name, values in measured.items():
            print(f"\n{name}: {', '.join(f'{v:.3f}' for v in values)} s")


def poll(condition: Callable[[], object], timeout: float) -> float | None:
    """Seconds until `condition()` was true (polled without pause), or None at the deadline."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None


# A dual-stack HTTP responder. Unlike http.server it never looks its own name up, so it
# starts at once even while a restarted netvm has no outbound rules (and no DNS) yet.
WEB_SERVER = r"""
import socket, socketserver, sys
port, text = int(sys.argv[1]), sys.argv[2].encode() + b"\n"
class Page(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(text)
        self.wfile.write(head + text)
class Server(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True
Server(("::", port), Page).serve_forever()
"""


@contextmanager
def web_server(lab: Lab, host: str, port: int = 8080) -> Iterator[str]:
    """An HTTP server in `host` answering a page that names the host; yields the text."""
    text = f"hello from {host} {os.getpid()}"
    with background(lab, host, ["python3", "-c", WEB_SERVER, str(port), text]) as server:
        assert poll(lambda: listening(lab, host, port) or server.poll() is not None, 5)
        assert server.poll() is None, f"the web server in {host} exited"
        yield text


@contextmanager
def sink(lab: Lab, host: str, port: int) -> Iterator[None]:
    """socat in `host` accepting TCP on `port` and throwing the bytes away."""
    argv = ["socat", "-u", f"TCP-LISTEN:{port},reuseaddr,fork", "OPEN:/dev/null"]
    with background(lab, host, argv) as server:
        assert poll(lambda: listening(lab, host, port) or server.poll() is not None, 5)
        assert server.poll() is None, f"socat in {host} exited"
        yield


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line of the process's output, within `timeout` (a bounded wait)."""
    import select

    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output in time"
    return process.stdout.readline().strip()


def flow_present(lab: Lab, host: str, source: str, source_port: int) -> bool:
    """Whether `host` tracks a TCP flow from source:source_port."""
    done = lab.run(
        host,
        ["conntrack", "-L", "-p", "tcp", "--orig-src", source, "--orig-port-src", str(source_port)],
        capture_output=True,
        text=True,
    )
    return f"sport={source_port} " in done.stdout
