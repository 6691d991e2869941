"""PCP over IPv6 (RFC 6887): the codec keeps IPv6 addresses as they are (never IPv4-mapped),
and the server on ::1 asks dom0 for the IPv6 sender and answers in its family (no root)."""

import asyncio
import ipaddress
import os
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.natd import pcp
from qubes_portfwd.natd.dom0 import Answer, Ask, Verdict
from qubes_portfwd.natd.mappings import MappingTable
from qubes_portfwd.natd.port_control import PortControlServer

LOOPBACK6 = ipaddress.IPv6Address("::1")
OUTSIDE6 = ipaddress.IPv6Address("2001:db8:0:1::2")
# Not IPv4-mapped (::ffff:0:0/96): those stand for IPv4 addresses in PCP's fields.
addresses6 = st.builds(ipaddress.IPv6Address, st.integers(2**48, 2**128 - 1)).filter(
    lambda a: a.ipv4_mapped is None
)


def map_request(client: ipaddress.IPv6Address, lifetime: int = 600, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "nonce": bytes(range(12)),
        "protocol": 6,
        "internal_port": 8080,
        "suggested_external_port": 18080,
        "suggested_external_address": ipaddress.IPv6Address(0),
    }
    fields.update(changes)
    request = pcp.PcpRequest(pcp.Opcode.MAP, lifetime, client, pcp.MapRequest(**fields))  # type: ignore[arg-type]
    return pcp.encode_map_request(request)


@given(client=addresses6, external=addresses6, third_party=addresses6)
def test_ipv6_addresses_round_trip_unmapped(
    client: ipaddress.IPv6Address,
    external: ipaddress.IPv6Address,
    third_party: ipaddress.IPv6Address,
) -> None:
    data = map_request(client, suggested_external_address=external, third_party=third_party)
    # The client address sits at bytes 8-24 of the header (RFC 6887 §7.1), in full.
    assert data[8:24] == client.packed
    parsed = pcp.parse_request(data)
    assert parsed.client_address == client
    assert parsed.map is not None
    assert parsed.map.suggested_external_address == external
    assert parsed.map.third_party == third_party


@given(external=addresses6, port=st.integers(1, 65535), lifetime=st.integers(0, 2**32 - 1))
def test_ipv6_response_carries_the_external_address(
    external: ipaddress.IPv6Address, port: int, lifetime: int
) -> None:
    result = pcp.MapResult(bytes(12), 17, 5000, port, external)
    data = pcp.encode_response(pcp.Opcode.MAP, pcp.Result.SUCCESS, lifetime, 7, result)
    assert len(data) == 60 and data[1] == pcp.Opcode.MAP | pcp.RESPONSE_BIT
    assert pcp.parse_map_response(data) == (pcp.Result.SUCCESS, lifetime, 7, result)


def test_ipv6_refusal_echoes_the_request() -> None:
    client = ipaddress.IPv6Address("fd09:24ef:4179::a89:6")
    data = map_request(client)
    request = pcp.parse_request(data)
    error = pcp.PcpError("map", "denied", pcp.Result.NOT_AUTHORIZED, pcp.Opcode.MAP)
    reply = pcp.error_response(request, error, 3, data)
    result, lifetime, _, echo = pcp.parse_map_response(reply)
    assert (result, lifetime) == (pcp.Result.NOT_AUTHORIZED, pcp.LONG_ERROR_LIFETIME)
    assert echo == pcp.MapResult(bytes(range(12)), 6, 8080, 18080, ipaddress.IPv6Address(0))


async def _exchange(server: tuple[str, int], datagrams: list[bytes]) -> list[bytes | None]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("::1", 0))
    replies: list[bytes | None] = []
    try:
        for datagram in datagrams:
            await loop.sock_sendto(sock, datagram, server)
            try:
                replies.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.5))
            except TimeoutError:
                replies.append(None)
    finally:
        sock.close()
    return replies


def _serve(
    answers: dict[int, Answer], datagrams: list[bytes]
) -> tuple[list[bytes | None], list[Ask]]:
    """Replies of a server on ::1 whose dom0 answers by the asked lifetime."""
    asked: list[Ask] = []

    async def dom0(ask: Ask) -> Answer:
        asked.append(ask)
        return answers[ask.lifetime]

    async def address_of(_: object) -> Verdict:
        return Verdict.FAILED

    async def scenario() -> list[bytes | None]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: PortControlServer(dom0, address_of, MappingTable()),
            local_addr=("::1", 0),
        )
        try:
            return await _exchange(transport.get_extra_info("sockname")[:2], datagrams)
        finally:
            transport.close()

    return asyncio.run(scenario()), asked


def test_map_over_ipv6_is_asked_for_the_sender_and_answered_in_ipv6() -> None:
    answers = {
        600: Answer(Verdict.GRANTED, OUTSIDE6, 18080, 300),
        0: Answer(Verdict.REMOVED),
        30: Answer(Verdict.REFUSED, detail="denied by policy"),
        # dom0 not knowing the edge's IPv6 address: never an IPv4 one in an IPv6 reply
        40: Answer(Verdict.GRANTED, ipaddress.IPv4Address("192.0.2.2"), 18081, 40),
    }
    nonce = os.urandom(12)
    replies, asked = _serve(
        answers,
        [
            map_request(LOOPBACK6, 600, nonce=nonce),
            map_request(LOOPBACK6, 30),
            map_request(LOOPBACK6, 40),
            map_request(LOOPBACK6, 0, nonce=nonce),
            # the header's client address is not the sender's
            map_request(ipaddress.IPv6Address("fd09:24ef:4179::a89:7"), 600),
            # NAT-PMP is IPv4 only (RFC 6886): dropped
            bytes([0, 0]),
        ],
    )
    granted, refused, other_family, deleted, mismatch, natpmp = replies
    assert granted is not None and refused is not None and other_family is not None
    assert deleted is not None and mismatch is not None
    assert natpmp is None
    assert [(a.client, a.lifetime, a.origin) for a in asked] == [
        (LOOPBACK6, 600, "PCP"),
        (LOOPBACK6, 30, "PCP"),
        (LOOPBACK6, 40, "PCP"),
        (LOOPBACK6, 0, "PCP"),
    ]
    assert pcp.parse_map_response(granted)[:2] == (pcp.Result.SUCCESS, 300)
    assert pcp.parse_map_response(granted)[3] == pcp.MapResult(nonce, 6, 8080, 18080, OUTSIDE6)
    assert pcp.parse_map_response(refused)[:2] == (
        pcp.Result.NOT_AUTHORIZED,
        pcp.LONG_ERROR_LIFETIME,
    )
    unknown = pcp.parse_map_response(other_family)[3]
    assert unknown is not None and unknown.external_address == ipaddress.IPv6Address(0)
    assert pcp.parse_map_response(deleted)[:2] == (pcp.Result.SUCCESS, 0)
    assert pcp.parse_map_response(deleted)[3] == pcp.MapResult(
        nonce, 6, 8080, 0, ipaddress.IPv6Address(0)
    )
    assert pcp.parse_map_response(mismatch)[0] == pcp.Result.ADDRESS_MISMATCH
    # A response's opcode byte has the R bit; the result code is byte 3 (RFC 6887 §7.2).
    assert struct.unpack("!BBBB", granted[:4]) == (2, 0x81, 0, 0)


def test_ipv4_and_ipv6_mappings_of_one_port_are_apart() -> None:
    table = MappingTable()
    for client in (ipaddress.IPv4Address("10.137.0.6"), ipaddress.IPv6Address("fd09::6")):
        ask = Ask(client, "tcp", 8080, 18080, 600, "PCP")
        table.record(ask, Answer(Verdict.GRANTED, OUTSIDE6, 18080, 600))
    assert len(table.listing()) == 2
    mapping6 = table.by_outside("tcp", 18080, family=6)
    assert mapping6 is not None
    assert mapping6.client == ipaddress.IPv6Address("fd09::6")
    table.forget(ipaddress.IPv6Address("fd09::6"), "tcp", 8080)
    assert table.by_outside("tcp", 18080, family=6) is None
    assert table.by_outside("tcp", 18080) is not None
