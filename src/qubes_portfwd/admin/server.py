"""The asyncio Unix socket server: bounded reads, one reply per connection, never a crash.

Unlike qubesd, which drops a connection on framing errors, every request gets a reply
(`2\\0ProtocolError…` for bad framing), so a client always learns what went wrong.
"""

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

from ..model.errors import ValidationError
from .errors import AdminError
from .methods import dispatch
from .service import Service
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


class Server:
    def __init__(self, service: Service, socket_path: Path, request_timeout: float = 10.0) -> None:
        self.service = service
        self.socket_path = socket_path
        self.request_timeout = request_timeout
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(self.socket_path)
        old_umask = os.umask(0o007)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path)
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.socket_path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._reply_for(reader)
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

    async def _reply_for(self, reader: asyncio.StreamReader) -> bytes:
        try:
            untrusted_data = await asyncio.wait_for(read_request(reader), self.request_timeout)
            request = parse_request(untrusted_data)
        except TimeoutError:
            return encode_error(
                "ProtocolError", f"request not complete within {self.request_timeout} s"
            )
        except (RequestTooLarge, FramingError) as err:
            return encode_error("ProtocolError", str(err))
        except OSError as err:
            return encode_error("ProtocolError", f"connection broke: {err}")
        log.info("%s+%s %s -> %s", request.method, request.arg, request.source, request.dest)
        try:
            return encode_ok(await dispatch(self.service, request))
        except AdminError as err:
            return encode_error(err.exc_type, err.message)
        except ValidationError as err:
            return encode_error("QubesValueError", str(err))
