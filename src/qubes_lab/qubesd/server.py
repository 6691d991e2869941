"""The asyncio Unix socket server: bounded reads, one reply per connection, never a crash.

Unlike qubesd, which drops a connection on framing errors, every request gets a reply
(`2\\0ProtocolError…` for bad framing), so a client always learns what went wrong.
"""

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.controller.errors import AdminError
from qubes_portfwd.model.errors import ValidationError

from .access import Caller, Peer, check_call, dom0_caller, qube_socket_path
from .methods import dispatch
from .properties import ADMIN_VM
from .wire import (
    MAX_HEADER,
    MAX_PAYLOAD,
    FramingError,
    encode_error,
    encode_ok,
    parse_request,
    split_header,
)

READ_CHUNK = 65536
MAX_REQUEST = MAX_HEADER + 1 + MAX_PAYLOAD
# An oversized request is drained (so the client can read the refusal) up to this much.
MAX_DRAIN = 64 * MAX_REQUEST
# Linux's SO_PEERGROUPS (the peer's supplementary groups at connect time); Python lacks it.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
FEW_GROUPS, NGROUPS_MAX = 64, 65536

Connected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

log = logging.getLogger(__name__)


class RequestTooLarge(Exception):
    pass


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Everything up to the client's EOF, or RequestTooLarge once a limit is passed."""
    data = bytearray()
    drained = 0
    refusal: str | None = None
    while drained <= MAX_DRAIN:
        chunk = await reader.read(READ_CHUNK)
        if not chunk:
            break
        if refusal is not None:
            drained += len(chunk)
            continue
        data += chunk
        try:
            split_header(bytes(data[: MAX_HEADER + 1]))
        except FramingError as err:
            refusal = str(err)
        if len(data) > MAX_REQUEST:
            refusal = f"payload larger than {MAX_PAYLOAD} bytes"
        if refusal is not None:
            drained = len(data)
            data.clear()
    if refusal is not None:
        raise RequestTooLarge(refusal)
    return bytes(data)


def remove_stale_socket(path: Path) -> None:
    """Remove a socket nobody listens on; refuse to start beside a live service."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
    else:
        raise FileExistsError(f"{path}: another service is already listening")
    finally:
        probe.close()


def peer_of(sock: socket.socket) -> Peer:
    """The connected process's uid and groups, from the kernel (not from anything it sent)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * FEW_GROUPS)
    except OSError as err:
        if err.errno != errno.ERANGE:
            raise
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * NGROUPS_MAX)
    groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return Peer(pid, uid, frozenset((gid, *groups)))


class Server:
    """dom0's socket (mode 0660, group `admin_gid`) and, for each qube in `qubes`, its own
    socket under `qrexec/` beside it (mode 0600) on which only that qube's calls pass."""

    def __init__(
        self,
        service: Controller,
        socket_path: Path,
        request_timeout: float = 10.0,
        *,
        admin_gid: int | None = None,
        qubes: Iterable[str] = (),
    ) -> None:
        self.service = service
        self.socket_path = socket_path
        self.request_timeout = request_timeout
        self.admin_gid = admin_gid
        self.qube_sockets = {qube: qube_socket_path(socket_path, qube) for qube in qubes}
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(self.socket_path)
        self._servers.append(await self._listen(self.socket_path, 0o117, self._handle_dom0))
        if os.geteuid() == 0 and self.admin_gid is not None:
            os.chown(self.socket_path, 0, self.admin_gid)
        for qube, path in self.qube_sockets.items():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                remove_stale_socket(path)
                handler = functools.partial(self._handle, Caller(qube))
                self._servers.append(await self._listen(path, 0o177, handler))
            except OSError as err:  # that qube cannot call; every other caller still can
                log.error("no socket for %s: %s", qube, err)

    async def _listen(self, path: Path, umask: int, handler: Connected) -> asyncio.AbstractServer:
        # The umask, not a chmod after bind, so the socket is never reachable more widely.
        old_umask = os.umask(umask)
        try:
            return await asyncio.start_unix_server(handler, path=path)
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self.socket_path.unlink(missing_ok=True)
        for path in self.qube_sockets.values():
            path.unlink(missing_ok=True)
        if self.qube_sockets:
            with contextlib.suppress(OSError):
                next(iter(self.qube_sockets.values())).parent.rmdir()

    async def _handle_dom0(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
        except OSError as err:
            caller = Caller(ADMIN_VM, f"unknown peer ({err})")
        else:
            caller = dom0_caller(peer, os.geteuid(), self.admin_gid)
            if caller.refusal is not None:
                log.warning("refused pid %d: %s", peer.pid, caller.refusal)
        await self._handle(caller, reader, writer)

    async def _handle(
        self, caller: Caller, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            reply = await self._reply_for(caller, reader)
        except Exception:  # a bug in one request must not stop the service
            log.exception("request failed")
            reply = encode_error("QubesException", "internal error; see the service log")
        try:
            writer.write(reply)
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(writer.drain(), self.request_timeout)
        except (OSError, TimeoutError):
            log.info("client left before its reply was sent")
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self.request_timeout)

    async def _reply_for(self, caller: Caller, reader: asyncio.StreamReader) -> bytes:
        try:
            # A refused caller's request is still read: closing on unread data would reset
            # the connection and the refusal would never reach the client.
            untrusted_data = await asyncio.wait_for(read_request(reader), self.request_timeout)
            if caller.refusal is not None:
                return encode_error("PermissionDenied", f"caller: {caller.refusal}")
            request = parse_request(untrusted_data)
        except TimeoutError:
            return encode_error(
                "ProtocolError", f"request not complete within {self.request_timeout} s"
            )
        except (RequestTooLarge, FramingError) as err:
            return encode_error("ProtocolError", str(err))
        except OSError as err:
            return encode_error("ProtocolError", f"connection broke: {err}")
        log.info(
            "%s+%s %s -> %s (via %s)",
            request.method,
            request.arg,
            request.source,
            request.dest,
            caller.qube,
        )
        try:
            check_call(caller, request)
            return encode_ok(await dispatch(self.service, request))
        except AdminError as err:
            return encode_error(err.exc_type, err.message)
        except OSError as err:  # the store failed (full disk, read-only): not a bad value
            log.warning("%s: %s", request.method, err)
            what = f"{err.filename}: " if getattr(err, "filename", None) else ""
            detail = str(err) if isinstance(err, ValidationError) else (err.strerror or str(err))
            return encode_error("QubesException", f"storing failed: {what}{detail}")
        except ValidationError as err:
            return encode_error("QubesValueError", str(err))
