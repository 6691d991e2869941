"""The qube's addresses from rtnetlink's answers: global ones per interface, garbage ignored."""

import ipaddress
import socket
import struct

from qubes_portfwd.agent.local_addresses import global_addresses
from qubes_portfwd.agent.rtnetlink import (
    IFA_ADDRESS,
    IFA_LOCAL,
    RT_SCOPE_UNIVERSE,
    RTM_NEWADDR,
    messages,
    parse_address,
)

HOST, LINK = 254, 253  # scopes


def _attribute(kind: int, value: bytes) -> bytes:
    padded = value + b"\0" * (-len(value) % 4)
    return struct.pack("=HH", 4 + len(value), kind) + padded


def _address(family: int, scope: int, index: int, *attributes: bytes) -> bytes:
    return struct.pack("=BBBBI", family, 24, 0, scope, index) + b"".join(attributes)


def _message(kind: int, sequence: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, 2, sequence, 0) + payload


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


NAMES = {1: "lo", 2: "eth0", 3: "vif6.0", 4: "x" * 16}
ANSWER = b"".join(
    _message(RTM_NEWADDR, 7, body)
    for body in (
        _address(socket.AF_INET, HOST, 1, _attribute(IFA_LOCAL, _ip("127.0.0.1"))),
        # IPv4: IFA_LOCAL is the address (IFA_ADDRESS the peer's, on point-to-point links)
        _address(
            socket.AF_INET,
            RT_SCOPE_UNIVERSE,
            2,
            _attribute(IFA_ADDRESS, _ip("192.0.2.9")),
            _attribute(IFA_LOCAL, _ip("192.0.2.2")),
        ),
        # IPv6: IFA_ADDRESS only
        _address(
            socket.AF_INET6, RT_SCOPE_UNIVERSE, 2, _attribute(IFA_ADDRESS, _ip("2001:db8::2"))
        ),
        _address(socket.AF_INET6, LINK, 2, _attribute(IFA_ADDRESS, _ip("fe80::1"))),
        _address(socket.AF_INET, RT_SCOPE_UNIVERSE, 3, _attribute(IFA_LOCAL, b"\1\2\3")),
        _address(socket.AF_INET, RT_SCOPE_UNIVERSE, 4, _attribute(IFA_LOCAL, _ip("10.0.0.1"))),
        _address(socket.AF_INET, RT_SCOPE_UNIVERSE, 9, _attribute(IFA_LOCAL, _ip("10.0.0.2"))),
        b"\2\0",  # shorter than an ifaddrmsg
    )
)


def test_global_addresses_per_interface() -> None:
    parsed = [a for _, _, payload in messages(ANSWER) if (a := parse_address(payload))]
    assert global_addresses(parsed, NAMES.get) == {
        "eth0": (ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("2001:db8::2"))
    }


def test_a_cut_or_malformed_answer_yields_what_came_before_it() -> None:
    first = _message(
        RTM_NEWADDR, 1, _address(socket.AF_INET, 0, 2, _attribute(IFA_LOCAL, _ip("192.0.2.2")))
    )
    assert len(list(messages(first + first[:20]))) == 1
    assert list(messages(struct.pack("=IHHII", 8, RTM_NEWADDR, 0, 1, 0))) == []  # length < header
    bad_attribute = _address(
        socket.AF_INET, 0, 2, struct.pack("=HH", 64, IFA_LOCAL) + _ip("1.2.3.4")
    )
    assert parse_address(bad_attribute) is None
