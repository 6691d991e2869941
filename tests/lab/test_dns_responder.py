"""The lab's DNS responder: answers, NXDOMAIN, and silence for garbage."""

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from qubes_lab.dns_responder import answer, parse_records

RECORDS = parse_records(["server.lab.test=198.51.100.80", "server.lab.test=2001:db8:0:2::80"])


def query(name: str, qtype: int, query_id: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def test_a_and_aaaa_are_answered() -> None:
    reply = answer(query("Server.Lab.Test", 1), RECORDS)
    assert reply is not None
    query_id, flags, _, ancount = struct.unpack_from("!HHHH", reply)
    assert (query_id, flags & 0x800F, ancount) == (0x1234, 0x8000, 1)
    assert reply.endswith(ipaddress.IPv4Address("198.51.100.80").packed)
    reply6 = answer(query("server.lab.test", 28), RECORDS)
    assert reply6 is not None and reply6.endswith(ipaddress.IPv6Address("2001:db8:0:2::80").packed)


def test_unknown_names_get_nxdomain() -> None:
    reply = answer(query("nowhere.lab.test", 1), RECORDS)
    assert reply is not None
    assert struct.unpack_from("!HH", reply)[1] & 0xF == 3


def test_responses_are_never_answered() -> None:
    message = bytearray(query("server.lab.test", 1))
    message[2] |= 0x80
    assert answer(bytes(message), RECORDS) is None


@given(st.binary(max_size=300))
def test_garbage_never_crashes_it(untrusted_query: bytes) -> None:
    reply = answer(untrusted_query, RECORDS)
    assert reply is None or reply[:2] == untrusted_query[:2]
