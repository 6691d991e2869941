"""UPnP's HTTP side: the device description and SOAP control, bounded in size and time."""

import asyncio
import contextlib
import ipaddress
import logging

from .upnp_actions import WanIpConnection
from .upnp_soap import (
    COMMON_CONTROL_PATH,
    CONTROL_PATH,
    DESCRIPTION_PATH,
    INVALID_ACTION,
    WANIP_SERVICE,
    SoapError,
    fault_body,
    parse_call,
    response_body,
    root_description,
)

MAX_HEAD = 8192
MAX_BODY = 16384
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 32

log = logging.getLogger(__name__)


class HttpRefusal(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _reply(status: str, body: bytes, content_type: str = 'text/xml; charset="utf-8"') -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        "Server: Linux UPnP/1.1 qubes-portfwd-natd/1\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    try:
        untrusted_head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpRefusal("431 Request Header Fields Too Large") from None
    except asyncio.IncompleteReadError:
        raise HttpRefusal("400 Bad Request") from None
    try:
        lines = untrusted_head.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        raise HttpRefusal("400 Bad Request") from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpRefusal("400 Bad Request")
    headers = {}
    for line in lines[1:]:
        name, has_colon, value = line.partition(":")
        if has_colon:
            headers[name.strip().lower()] = value.strip()
    body = b""
    if parts[0] == "POST":
        length_text = headers.get("content-length", "")
        if not length_text.isdigit():
            raise HttpRefusal("411 Length Required")
        # int() refuses over 4300 digits (ValueError); a long number is too large anyway.
        if len(length_text) > len(str(MAX_BODY)) or int(length_text) > MAX_BODY:
            raise HttpRefusal("413 Content Too Large")
        try:
            body = await reader.readexactly(int(length_text))
        except asyncio.IncompleteReadError:
            raise HttpRefusal("400 Bad Request") from None
    return parts[0], parts[1], headers, body


class UpnpHttpServer:
    def __init__(self, actions: WanIpConnection, base_url: str, uuid: str) -> None:
        self.actions = actions
        self.base_url = base_url
        self.uuid = uuid
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            if self._slots.locked():
                reply = _reply("503 Service Unavailable", b"")
            else:
                async with self._slots:
                    reply = await asyncio.wait_for(self._reply_to(reader, peer), REQUEST_TIMEOUT)
        except TimeoutError:
            reply = _reply("408 Request Timeout", b"")
        except Exception:  # a bad request must never stop the server
            log.exception("HTTP request from %s failed", peer)
            reply = _reply("500 Internal Server Error", b"")
        try:
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)

    async def _reply_to(self, reader: asyncio.StreamReader, peer: object) -> bytes:
        try:
            method, path, _headers, untrusted_body = await _read_request(reader)
        except HttpRefusal as refusal:
            return _reply(refusal.status, b"")
        if method == "GET" and path == DESCRIPTION_PATH:
            return _reply("200 OK", root_description(self.base_url, self.uuid))
        if method != "POST" or path not in (CONTROL_PATH, COMMON_CONTROL_PATH):
            return _reply("404 Not Found", b"")
        try:
            sender = ipaddress.ip_address(str(peer[0]))  # type: ignore[index]
            call = parse_call(untrusted_body)
            if path == COMMON_CONTROL_PATH:
                raise SoapError(INVALID_ACTION, "Invalid Action")
            arguments = await self.actions.call(call, sender)
        except SoapError as err:
            return _reply("500 Internal Server Error", fault_body(err))
        return _reply("200 OK", response_body(call.action, WANIP_SERVICE, arguments))


async def start(
    actions: WanIpConnection, host: str, port: int, uuid: str
) -> tuple[asyncio.Server, int]:
    """Listen on host:port (0: any free port); returns the server and the port it got."""
    holder: list[UpnpHttpServer] = []
    server = await asyncio.start_server(
        lambda r, w: holder[0].handle(r, w), host, port, limit=MAX_HEAD
    )
    bound = server.sockets[0].getsockname()[1]
    holder.append(UpnpHttpServer(actions, f"http://{host}:{bound}/", uuid))
    return server, bound
