"""One Admin API call over the qubesd socket: frame, send, half-close, read, parse the reply."""

import os
import socket
from pathlib import Path

from qubes_portfwd.defaults import DEFAULT_SOCKET

MAX_REPLY = 64 << 20


class QubesdError(Exception):
    """The service answered with an error: `exc_type` as Qubes names it, and the message."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


class ServiceNotRunning(ConnectionError):
    """Nothing answers on the socket: the admin service is not running (or not reachable)."""


class AccessDenied(ConnectionError):
    """The socket refuses this user: only root and the admin group may use dom0's socket."""


class ProtocolViolation(ConnectionError):
    """The reply does not follow the qubesd framing."""


def default_socket_path() -> Path:
    return Path(os.environ.get("QUBESD_SOCKET") or DEFAULT_SOCKET)


def default_prompt_socket_path(socket_path: Path) -> Path:
    """Where dom0's prompt methods go: `$QUBES_PORTFWD_PROMPT_SOCKET` (a stock host: our
    extension's own socket), else the qubesd socket itself (the lab's qubesd serves them)."""
    return Path(os.environ.get("QUBES_PORTFWD_PROMPT_SOCKET") or socket_path)


def frame_request(
    dest: str, method: str, arg: str = "", payload: bytes = b"", source: str = "dom0"
) -> bytes:
    return f"{method}+{arg} {source} name {dest}\0".encode("ascii") + payload


def parse_reply(untrusted_reply: bytes) -> bytes:
    """The payload of a `0\\0` reply; QubesdError for `2\\0`, formatted as Qubes' client does."""
    if untrusted_reply.startswith(b"0\0"):
        return untrusted_reply[2:]
    if untrusted_reply.startswith(b"2\0"):
        fields = untrusted_reply[2:].split(b"\0")
        if len(fields) < 4 or fields[-1] != b"":
            raise ProtocolViolation("malformed error reply")
        exc_type = fields[0].decode("ascii", errors="replace")
        message_format = fields[2].decode("utf-8", errors="replace")
        args = tuple(f.decode("utf-8", errors="replace") for f in fields[3:-1])
        try:
            message = message_format % args
        except (TypeError, ValueError):
            message = " ".join((message_format, *args))
        raise QubesdError(exc_type, message)
    if not untrusted_reply:
        raise ProtocolViolation("empty reply from the admin service")
    raise ProtocolViolation("reply starts with neither 0\\0 nor 2\\0")


def call(
    socket_path: Path,
    dest: str,
    method: str,
    arg: str = "",
    payload: bytes = b"",
    timeout: float = 120.0,
    source: str = "dom0",
) -> bytes:
    """One request; `source` is who asks (dom0's tools; a qube on its own qrexec socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ServiceNotRunning(
                f"the admin service is not running (nothing answers on {socket_path}: "
                f"{err.strerror})"
            ) from None
        except PermissionError:
            raise AccessDenied(
                f"not allowed to use {socket_path}: run as root or as a member of the "
                "admin group (qubes)"
            ) from None
        sock.sendall(frame_request(dest, method, arg, payload, source))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        size = 0
        while chunk := sock.recv(65536):
            size += len(chunk)
            if size > MAX_REPLY:
                raise ProtocolViolation(f"reply larger than {MAX_REPLY} bytes")
            chunks.append(chunk)
    finally:
        sock.close()
    return parse_reply(b"".join(chunks))
