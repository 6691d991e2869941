"""A tiny authoritative DNS responder (UDP and TCP, A and AAAA) for the lab's outside world.

`python -m qubes_lab.dns_responder --listen ADDR --record NAME=ADDR... [--ready FILE]`
Qubes' virtual DNS (10.139.1.1/2) is DNATed by the network qubes to it, so `specialtarget=dns`
rules and dsthost names are tested end to end.
"""

import argparse
import asyncio
import ipaddress
import signal
import struct
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_NOTIMP = 1, 3, 4
TTL = 60
TCP_IDLE_TIMEOUT = 10.0

Records = Mapping[str, Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]]


def _parse_question(untrusted_query: bytes) -> tuple[str, int, int, int] | None:
    """(name, qtype, qclass, end offset) of the first question; None if malformed."""
    offset, labels = 12, []
    while True:
        if offset >= len(untrusted_query):
            return None
        length = untrusted_query[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length > len(untrusted_query):
            return None
        labels.append(untrusted_query[offset : offset + length].decode("ascii", "replace"))
        offset += length
    if offset + 4 > len(untrusted_query):
        return None
    qtype, qclass = struct.unpack_from("!HH", untrusted_query, offset)
    return ".".join(labels).lower(), qtype, qclass, offset + 4


def answer(untrusted_query: bytes, records: Records) -> bytes | None:
    """The response to one DNS query message; None for garbage not worth answering."""
    if len(untrusted_query) < 12:
        return None
    query_id, flags, qdcount = struct.unpack_from("!HHH", untrusted_query)
    if flags & 0x8000:  # a response, not a query: never answer it (no loops)
        return None
    opcode = (flags >> 11) & 0xF
    reply_flags = 0x8000 | 0x0400 | (flags & 0x7900)  # QR, AA, opcode and RD copied
    question = _parse_question(untrusted_query) if qdcount == 1 else None
    if question is None:
        return struct.pack("!HHHHHH", query_id, reply_flags | RCODE_FORMERR, 0, 0, 0, 0)
    name, qtype, qclass, end = question
    header_question = untrusted_query[12:end]
    if opcode != 0 or qclass != CLASS_IN:
        rcode, matches = RCODE_NOTIMP, []
    elif name not in records:
        rcode, matches = RCODE_NXDOMAIN, []
    else:
        version = {TYPE_A: 4, TYPE_AAAA: 6}.get(qtype)
        rcode, matches = 0, [a for a in records[name] if a.version == version]
    body = b"".join(
        struct.pack("!HHHIH", 0xC00C, qtype, CLASS_IN, TTL, len(a.packed)) + a.packed
        for a in matches
    )
    header = struct.pack("!HHHHHH", query_id, reply_flags | rcode, 1, len(matches), 0, 0)
    return header + header_question + body


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, records: Records) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data, self.records)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _serve_tcp(
    records: Records, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            size = struct.unpack(
                "!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
            )[0]
            untrusted_query = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_TIMEOUT)
            reply = answer(untrusted_query, records)
            if reply is None:
                break
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(listen: Sequence[str], records: Records, ready: Path | None, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    closers = []
    for address in listen:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpServer(records), local_addr=(address, port)
        )
        server = await asyncio.start_server(
            lambda r, w: _serve_tcp(records, r, w), host=address, port=port
        )
        closers += [transport.close, server.close]
    if ready is not None:
        ready.write_text("ready\n")
    await stop.wait()
    for close in closers:
        close()


def parse_records(
    texts: Sequence[str],
) -> dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    records: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = defaultdict(list)
    for text in texts:
        name, _, address = text.partition("=")
        records[name.lower().rstrip(".")].append(ipaddress.ip_address(address))
    return dict(records)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qubes-lab-dns", description=__doc__)
    parser.add_argument("--listen", action="append", required=True, help="address to serve on")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--record", action="append", default=[], help="NAME=ADDRESS")
    parser.add_argument("--ready", type=Path, help="file written once the sockets are bound")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, parse_records(args.record), args.ready, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
