"""UPnP's HTTP side: the device description and SOAP control, bounded in size and time.

Each client address has its own share of connections, so one qube holding many open cannot
lock the others out. Requests whose framing is ambiguous are refused with 400, never
guessed at (RFC 9112 §3.2, §6.1, §6.3, §5.1-5.2).
"""

import asyncio
import contextlib
import ipaddress
import logging
import string
from collections import Counter

from .upnp_actions import WanIpConnection
from .upnp_firewall import firewall_call
from .upnp_soap import (
    COMMON_CONTROL_PATH,
    CONTROL_PATH,
    DESCRIPTION_PATH,
    INVALID_ACTION,
    IPV6_FIREWALL_CONTROL_PATH,
    IPV6_FIREWALL_SERVICE,
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
MAX_CONNECTIONS = 64
CLIENT_CONNECTIONS = 4
# Fields that frame or route the request: a second one is a smuggling attempt or a broken
# client, and either copy may be the one a proxy on the way believed.
SINGLE_FIELDS = frozenset({"content-length", "transfer-encoding", "host"})
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")

log = logging.getLogger(__name__)


class HttpRefusal(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _reply(
    status: str, body: bytes, content_type: str = 'text/xml; charset="utf-8"', extra: str = ""
) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}"
        "Server: Linux UPnP/1.1 qubes-portfwd-natd/1\r\n\r\n"
    )
    return head.encode("ascii") + body


def _parse_fields(untrusted_lines: list[str]) -> dict[str, str]:
    """Header fields by lower-case name; HttpRefusal 400 for anything malformed or repeated
    that must not be."""
    fields: dict[str, str] = {}
    for untrusted_line in untrusted_lines:
        if not untrusted_line:
            continue  # the blank line that ends the head
        if untrusted_line[0] in " \t":
            raise HttpRefusal("400 Bad Request")  # obsolete line folding
        name, has_colon, value = untrusted_line.partition(":")
        if not has_colon or not name or not set(name) <= TOKEN_CHARS:
            raise HttpRefusal("400 Bad Request")  # also "Name :", a smuggling classic
        key = name.lower()
        if key in fields:
            if key in SINGLE_FIELDS:
                raise HttpRefusal("400 Bad Request")
            fields[key] = f"{fields[key]}, {value.strip()}"
        else:
            fields[key] = value.strip()
    return fields


def _body_length(fields: dict[str, str]) -> int:
    if "transfer-encoding" in fields:
        # Both: which one frames the body is what request smuggling plays on.
        if "content-length" in fields:
            raise HttpRefusal("400 Bad Request")
        raise HttpRefusal("501 Not Implemented")
    if "content-length" not in fields:
        raise HttpRefusal("411 Length Required")
    length_text = fields["content-length"]
    if not (length_text.isascii() and length_text.isdigit()):
        raise HttpRefusal("400 Bad Request")  # "5, 5" included: one value only
    # int() refuses over 4300 digits (ValueError); a long number is too large anyway.
    if len(length_text) > len(str(MAX_BODY)) or int(length_text) > MAX_BODY:
        raise HttpRefusal("413 Content Too Large")
    return int(length_text)


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
    headers = _parse_fields(lines[1:])
    body = b""
    if parts[0] == "POST":
        try:
            body = await reader.readexactly(_body_length(headers))
        except asyncio.IncompleteReadError:
            raise HttpRefusal("400 Bad Request") from None
    return parts[0], parts[1], headers, body


class UpnpHttpServer:
    def __init__(self, actions: WanIpConnection, base_url: str, uuid: str) -> None:
        self.actions = actions
        self.base_url = base_url
        self.uuid = uuid
        self._open: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        try:
            if self._open[host] >= CLIENT_CONNECTIONS or self._open.total() >= MAX_CONNECTIONS:
                reply = _reply("503 Service Unavailable", b"", extra="Retry-After: 1\r\n")
            else:
                self._open[host] += 1
                try:
                    reply = await asyncio.wait_for(self._reply_to(reader, peer), REQUEST_TIMEOUT)
                finally:
                    self._open[host] -= 1
                    if self._open[host] <= 0:
                        del self._open[host]
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
        if method != "POST" or path not in (
            CONTROL_PATH,
            COMMON_CONTROL_PATH,
            IPV6_FIREWALL_CONTROL_PATH,
        ):
            return _reply("404 Not Found", b"")
        try:
            sender = ipaddress.ip_address(str(peer[0]))  # type: ignore[index]
            call = parse_call(untrusted_body)
            if path == COMMON_CONTROL_PATH:
                raise SoapError(INVALID_ACTION, "Invalid Action")
            if path == IPV6_FIREWALL_CONTROL_PATH:
                firewall = firewall_call(call)
                return _reply("200 OK", response_body(call.action, IPV6_FIREWALL_SERVICE, firewall))
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
