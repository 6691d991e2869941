"""`qubes.PortfwdNat`: the Unix socket qrexec hands network qubes' NAT calls to, in qubesd.

`/etc/qubes-rpc/qubes.PortfwdNat` links to this socket. Per connection: qrexec's header (the
caller's name, trusted), then the caller's untrusted payload up to its EOF, bounded in size
and time; the answer comes from the same controller handlers the lab's qubesd registers
(`controller/nat_requests.py`), framed as Admin API replies (`reply.py`), and the socket is
closed. `qubes.PortfwdNat+Request`: payload one request line (`nat_mapping`'s form).
`qubes.PortfwdNat+Address`: payload the client's address; answers the outside address.
Everything runs on the controller's event loop (qubesd's) and awaits; nothing blocks it.
"""

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..controller import nat_requests
from ..controller.controller import Controller
from ..controller.errors import AdminError, PermissionDenied, ProtocolError, QubesValueError
from ..model.errors import ValidationError
from .header import MAX_HEADER, HeaderError, ServiceCall, parse_header, split_header
from .reply import encode_error, encode_ok

SERVICE = "qubes.PortfwdNat"
NAT_SOCKET = Path("/var/run/qubes-portfwd/nat.sock")
# qrexec's processes in dom0 run as the first member of this group (qubesd's socket too).
SOCKET_GROUP = "qubes"
MAX_PAYLOAD = 4096  # a request line is under 400 bytes
READ_CHUNK = 4096
# An oversized call is read on (and dropped) up to this much, so its refusal still arrives.
MAX_DRAIN = 1 << 20
READ_TIMEOUT = 10.0  # the whole call must have arrived by then
WRITE_TIMEOUT = 10.0
# Calls of one qube open at once (an ask waiting for the user holds one; dom0's per-client
# shares in nat_limits are smaller still): above it, a refusal at once.
MAX_OPEN_PER_QUBE = 32

Handler = Callable[[Controller, nat_requests.Request], Awaitable[bytes]]
OPERATIONS: dict[str, Handler] = {
    "Request": nat_requests.vm_portfwd_nat_request,
    "Address": nat_requests.vm_portfwd_nat_address,
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Call:
    """A call as the controller's handlers take it: `dest` is the asking network qube."""

    dest: str
    arg: str
    untrusted_payload: bytes


class _Refused(Exception):
    """The call is refused before it reaches a handler (framing, size, time)."""


async def read_call(
    reader: asyncio.StreamReader, from_dom0: bool = False
) -> tuple[ServiceCall, bytes]:
    """The header and the payload up to the caller's EOF; _Refused or HeaderError if not."""
    data = bytearray()
    refusal: Exception | None = None
    drained = 0
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
        except HeaderError as err:
            refusal = err
        if len(data) > MAX_HEADER + 1 + MAX_PAYLOAD:
            refusal = _Refused(f"payload: larger than {MAX_PAYLOAD} bytes")
        if refusal is not None:
            drained = len(data)
            data.clear()
    if refusal is not None:
        raise refusal
    split = split_header(bytes(data))
    if split is None:
        raise HeaderError("header: the call ended before the header's NUL")
    untrusted_header, untrusted_payload = split
    if len(untrusted_payload) > MAX_PAYLOAD:
        raise _Refused(f"payload: larger than {MAX_PAYLOAD} bytes")
    return parse_header(untrusted_header, from_dom0), untrusted_payload


def _address_payload(untrusted_payload: bytes) -> str:
    try:
        untrusted_text = untrusted_payload.decode("ascii").strip()
    except UnicodeDecodeError:
        raise QubesValueError("client: expected an IPv4 or IPv6 address") from None
    if not untrusted_text or len(untrusted_text.split()) != 1:
        raise QubesValueError("client: expected one IPv4 or IPv6 address")
    return untrusted_text


def _handler_call(controller: Controller, call: ServiceCall, payload: bytes) -> _Call:
    """The handlers' view of a call, after checks no handler makes itself."""
    if call.service != SERVICE:
        raise PermissionDenied(f"service: this socket serves {SERVICE} only")
    if call.argument not in OPERATIONS:
        raise ProtocolError(f"argument: expected {' or '.join(sorted(OPERATIONS))}")
    if call.source not in controller.topology:
        raise PermissionDenied(f"source: {call.source} is not a qube of this host")
    if call.argument == "Address":
        return _Call(call.source, _address_payload(payload), b"")
    return _Call(call.source, "", payload)


class NatService:
    """Answers each connection in its own task; counts each qube's calls under way."""

    from_dom0 = False  # callers are qubes, named by qrexec

    def __init__(
        self,
        controller: Controller,
        read_timeout: float = READ_TIMEOUT,
        max_open: int = MAX_OPEN_PER_QUBE,
    ) -> None:
        self.controller = controller
        self.read_timeout = read_timeout
        self.max_open = max_open
        self._open: dict[str, int] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._reply(reader)
        except Exception:  # a bug in one call must not stop the service
            log.exception("%s: call failed", SERVICE)
            reply = encode_error("QubesException", "internal error; see qubesd's log")
        try:
            writer.write(reply)
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (OSError, TimeoutError):
            log.info("%s: the caller left before its answer was sent", SERVICE)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT)

    async def _reply(self, reader: asyncio.StreamReader) -> bytes:
        try:
            call, untrusted_payload = await asyncio.wait_for(
                read_call(reader, self.from_dom0), self.read_timeout
            )
        except TimeoutError:
            return encode_error("ProtocolError", f"call not complete within {self.read_timeout} s")
        except (HeaderError, _Refused) as err:
            log.warning("%s: refused: %s", SERVICE, err)
            return encode_error("ProtocolError", str(err))
        except OSError as err:
            return encode_error("ProtocolError", f"connection broke: {err}")
        if self._open.get(call.source, 0) >= self.max_open:
            log.warning("%s: %s has %d calls open", SERVICE, call.source, self.max_open)
            return encode_error("QubesException", f"{call.source}: too many requests under way")
        self._open[call.source] = self._open.get(call.source, 0) + 1
        try:
            return await self._answer(call, untrusted_payload)
        finally:
            self._open[call.source] -= 1
            if not self._open[call.source]:
                del self._open[call.source]

    async def _dispatch(self, call: ServiceCall, untrusted_payload: bytes) -> bytes:
        """The handler's answer to a call; AdminError or ValidationError refuse it."""
        request = _handler_call(self.controller, call, untrusted_payload)
        return await OPERATIONS[call.argument](self.controller, request)

    async def _answer(self, call: ServiceCall, untrusted_payload: bytes) -> bytes:
        log.info("%s+%s from %s", call.service, call.argument, call.source)
        try:
            return encode_ok(await self._dispatch(call, untrusted_payload))
        except AdminError as err:
            return encode_error(err.exc_type, err.message)
        except ValidationError as err:
            return encode_error("QubesValueError", str(err))
        except OSError as err:  # the store failed (full disk, read-only): not a bad value
            log.warning("%s+%s: %s", call.service, call.argument, err)
            return encode_error("QubesException", f"storing failed: {err.strerror or err}")


def remove_stale_socket(path: Path) -> None:
    """Remove a socket nobody listens on; refuse to start beside a live service."""
    if not path.exists() and not path.is_symlink():
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


async def serve_nat_requests(
    controller: Controller,
    socket_path: Path = NAT_SOCKET,
    *,
    group: str | None = SOCKET_GROUP,
    read_timeout: float = READ_TIMEOUT,
    max_open: int = MAX_OPEN_PER_QUBE,
) -> asyncio.AbstractServer:
    """Listen on `socket_path` (mode 0660, group `group`; None: the current group).

    Call on the controller's loop (qubesd's). Stop with `server.close()`; a socket left
    behind is removed at the next start.
    """
    service = NatService(controller, read_timeout, max_open)
    return await serve_unix(service.handle, socket_path, group, SERVICE)


async def serve_unix(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    socket_path: Path,
    group: str | None,
    name: str,
) -> asyncio.AbstractServer:
    """Listen on `socket_path`, mode 0660 and group `group` (None: the current group)."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_socket(socket_path)
    # The umask, not a chmod after bind: the socket is never reachable more widely.
    old_umask = os.umask(0o117)
    try:
        server = await asyncio.start_unix_server(handle, path=socket_path)
    finally:
        os.umask(old_umask)
    if group is not None:
        try:
            shutil.chown(socket_path, group=group)
        except (LookupError, OSError):
            server.close()
            socket_path.unlink(missing_ok=True)
            raise
    log.info("%s: serving on %s", name, socket_path)
    return server
