"""Real-traffic helpers for lab tests: a TCP server that names its peer, and a client."""

import ipaddress
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from lab_process import tcp_server
from qubes_lab.builder import Lab

CONNECT_TIMEOUT = 1.0  # seconds; every negative attempt costs this much


def _socket_address(address: str, port: int) -> str:
    if ipaddress.ip_address(address).version == 6:
        return f"TCP6:[{address}]:{port}"
    return f"TCP4:{address}:{port}"


@contextmanager
def peer_echo_server(lab: Lab, host: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A TCP server in `host` that answers each connection with the peer's address."""
    argv = ["socat", f"TCP6-LISTEN:{port},ipv6only=0,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR"]
    with tcp_server(lab, host, argv, port) as server:
        yield server


def connect(
    lab: Lab,
    host: str,
    address: object,
    port: int,
    bind: object | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> str | None:
    """The peer address the server reported, or None when the connection failed."""
    target = _socket_address(str(address), port)
    options = f",connect-timeout={timeout}"
    if bind is not None:
        source = ipaddress.ip_address(str(bind))
        options += f",bind=[{source}]" if source.version == 6 else f",bind={source}"
    result = lab.run(
        host,
        ["socat", "-T", str(timeout), "-u", target + options, "STDOUT"],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )
    reply = result.stdout.strip()
    if result.returncode != 0 or not reply:
        return None
    # socat writes the peer in full IPv6 form; a dual-stack listener maps IPv4 peers.
    peer = ipaddress.ip_address(reply.removeprefix("[").removesuffix("]"))
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        return str(peer.ipv4_mapped)
    return str(peer)
