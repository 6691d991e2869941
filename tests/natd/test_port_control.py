"""The NAT-PMP/PCP server in-process on loopback (no root): hostile datagrams are answered
with the protocol's error or dropped, and the server keeps serving. dom0 is a stand-in that
grants everything and records what it was asked."""

import asyncio
import ipaddress
import os
import socket
from dataclasses import replace

from qubes_portfwd.natd import pcp
from qubes_portfwd.natd.dom0 import Answer, Ask, Verdict
from qubes_portfwd.natd.mappings import MappingTable
from qubes_portfwd.natd.port_control import CLIENT_WAITING, PortControlServer
from qubes_portfwd.natpmp import wire

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
OUTSIDE = ipaddress.IPv4Address("192.0.2.2")
REPLY_TIMEOUT = 2.0


async def exchange(
    sock: socket.socket, server: tuple[str, int], datagrams: list[bytes]
) -> list[bytes | None]:
    loop = asyncio.get_running_loop()
    replies: list[bytes | None] = []
    for datagram in datagrams:
        await loop.sock_sendto(sock, datagram, server)
        try:
            replies.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.3))
        except TimeoutError:
            replies.append(None)
    return replies


def test_hostile_datagrams_then_real_requests() -> None:
    asked: list[Ask] = []

    async def grant(ask: Ask) -> Answer:
        asked.append(ask)
        if ask.lifetime == 0:
            return Answer(Verdict.REMOVED)
        return Answer(Verdict.GRANTED, OUTSIDE, ask.external_port or 40000, 120)

    async def address_of(_: object) -> ipaddress.IPv4Address:
        return OUTSIDE

    async def scenario() -> list[bytes | None]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: PortControlServer(grant, address_of, MappingTable()),  # type: ignore[arg-type]
            local_addr=("127.0.0.1", 0),
        )
        server = transport.get_extra_info("sockname")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        nonce = os.urandom(12)
        third_party = pcp.encode_map_request(
            pcp.PcpRequest(
                pcp.Opcode.MAP, 60, LOOPBACK,
                pcp.MapRequest(nonce, 6, 80, 0, ipaddress.IPv4Address(0), third_party=OUTSIDE),
            )
        )  # fmt: skip
        spoofed = pcp.encode_map_request(
            pcp.PcpRequest(
                pcp.Opcode.MAP, 60, ipaddress.IPv4Address("10.137.0.7"),
                pcp.MapRequest(nonce, 6, 80, 0, ipaddress.IPv4Address(0)),
            )
        )  # fmt: skip
        good_pcp = pcp.encode_map_request(
            pcp.PcpRequest(
                pcp.Opcode.MAP, 60, LOOPBACK,
                pcp.MapRequest(nonce, 17, 5000, 5001, ipaddress.IPv4Address(0)),
            )
        )  # fmt: skip
        try:
            return await exchange(
                sock,
                server,
                [
                    b"\x00",  # short: dropped
                    b"\x00\x80" + bytes(10),  # a response: dropped
                    b"\x00\x07",  # unknown opcode: error 5
                    b"\x00\x01" + bytes(3),  # wrong length: dropped
                    b"\x05\x00" + bytes(22),  # unknown version: PCP's UNSUPP_VERSION
                    third_party,
                    spoofed,
                    os.urandom(300),
                    b"\x00\x00",  # NAT-PMP external address
                    wire.encode_request(wire.MappingRequest("tcp", 8080, 18080, 3600)),
                    good_pcp,
                ],
            )
        finally:
            sock.close()
            transport.close()

    replies = asyncio.run(scenario())
    assert replies[0] is None and replies[1] is None and replies[3] is None
    # Unknown opcode 7: answered with opcode 135 and result 5 (UNSUPPORTED_OPCODE).
    assert (replies[2] or b"")[:4] == b"\x00\x87\x00\x05"
    assert replies[4] is not None and replies[4][3] == pcp.Result.UNSUPP_VERSION
    assert replies[5] is not None and replies[5][3] == pcp.Result.NOT_AUTHORIZED
    assert replies[6] is not None and replies[6][3] == pcp.Result.ADDRESS_MISMATCH
    # The epoch counts seconds since the server started; it is not what is checked here.
    address = replace(wire.parse_response(replies[8] or b""), epoch=0)
    assert address == wire.ExternalAddressResponse(0, OUTSIDE)
    mapping = replace(wire.parse_response(replies[9] or b""), epoch=0)
    assert mapping == wire.MappingResponse("tcp", 0, 8080, 18080, 120)
    result, lifetime, _, mapped = pcp.parse_map_response(replies[10] or b"")
    assert (result, lifetime) == (pcp.Result.SUCCESS, 120)
    assert mapped is not None and (mapped.external_port, mapped.external_address) == (
        5001,
        OUTSIDE,
    )
    # Only the well-formed, own-address requests ever reached dom0.
    assert [(a.origin, a.proto, a.internal_port) for a in asked] == [
        ("NAT-PMP", "tcp", 8080),
        ("PCP", "udp", 5000),
    ]


def test_a_client_over_its_share_gets_each_protocols_temporary_refusal() -> None:
    """NAT-PMP: OUT_OF_RESOURCES (RFC 6886 has nothing narrower); PCP: USER_EX_QUOTA with a
    short error lifetime (RFC 6887 §7.4), for mappings and the address alike."""

    async def limited(ask: Ask) -> Answer:
        return Answer(Verdict.LIMITED, detail="too many requests from this client")

    async def address_of(_: object) -> Verdict:
        return Verdict.LIMITED

    async def scenario() -> list[bytes | None]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: PortControlServer(limited, address_of, MappingTable()),  # type: ignore[arg-type]
            local_addr=("127.0.0.1", 0),
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        request = pcp.PcpRequest(
            pcp.Opcode.MAP, 60, LOOPBACK, pcp.MapRequest(os.urandom(12), 6, 80, 0, OUTSIDE)
        )
        try:
            return await exchange(
                sock,
                transport.get_extra_info("sockname"),
                [
                    b"\x00\x00",
                    wire.encode_request(wire.MappingRequest("tcp", 8080, 18080, 3600)),
                    pcp.encode_map_request(request),
                ],
            )
        finally:
            sock.close()
            transport.close()

    address, mapping, pcp_reply = asyncio.run(scenario())
    assert (address or b"")[:4] == b"\x00\x80\x00\x04"
    assert (mapping or b"")[:4] == b"\x00\x82\x00\x04"
    result, lifetime, _, echoed = pcp.parse_map_response(pcp_reply or b"")
    assert (result, lifetime) == (pcp.Result.USER_EX_QUOTA, pcp.SHORT_ERROR_LIFETIME)
    assert echoed is not None and echoed.internal_port == 80


def test_datagrams_waiting_per_client_are_bounded_and_others_still_served() -> None:
    """A client whose requests all wait (dom0 slow) cannot queue without end; another
    client's request is still read and answered."""
    release = asyncio.Event()
    asked: list[Ask] = []

    async def slow_for_one(ask: Ask) -> Answer:
        asked.append(ask)
        if ask.client == LOOPBACK:
            await release.wait()
        return Answer(Verdict.GRANTED, OUTSIDE, ask.external_port, 120)

    async def address_of(_: object) -> ipaddress.IPv4Address:
        return OUTSIDE

    async def scenario() -> tuple[int, bytes | None]:
        loop = asyncio.get_running_loop()
        server = PortControlServer(slow_for_one, address_of, MappingTable())  # type: ignore[arg-type]
        transport, _ = await loop.create_datagram_endpoint(
            lambda: server, local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.setblocking(False)
        other.bind(("127.0.0.2", 0))
        try:
            for port in range(1000, 1000 + 2 * CLIENT_WAITING):
                flooder.sendto(
                    wire.encode_request(wire.MappingRequest("tcp", port, port, 60)), address
                )
            [reply] = await exchange(
                other, address, [wire.encode_request(wire.MappingRequest("udp", 53, 5353, 60))]
            )
            waiting = sum(a.client == LOOPBACK for a in asked)
            release.set()
            return waiting, reply
        finally:
            flooder.close()
            other.close()
            transport.close()

    waiting, reply = asyncio.run(scenario())
    assert waiting == CLIENT_WAITING
    assert replace(wire.parse_response(reply or b""), epoch=0) == wire.MappingResponse(
        "udp", 0, 53, 5353, 120
    )
