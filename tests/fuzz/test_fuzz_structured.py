"""Structure-aware fuzzing: inputs built from each format's own pieces, so they get past
the first checks and exercise the deeper ones."""

import asyncio
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from qubes_lab.qubesd import wire
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule_text import FORWARD_KEYS, VALUE_CHARS, format_rule, parse_rule
from qubes_portfwd.natd import http_server, pcp
from qubes_portfwd.natpmp import wire as natpmp
from strategies import rules

from .limits import examples, time_limit
from .targets import _serve_http, admin_wire, natpmp_packets, pcp_packets, rule_text, upnp_http

fuzz = settings(max_examples=examples(), deadline=None)
_values = st.text(alphabet=sorted(VALUE_CHARS), max_size=40)
_keys = st.sampled_from(sorted({*FORWARD_KEYS, "dsthost", "dst4", "dst6", "icmptype", "x"}))


@fuzz
@given(rules())
def test_every_valid_rule_round_trips_through_its_text(rule) -> None:  # type: ignore[no-untyped-def]
    assert parse_rule(format_rule(rule)) == rule


@fuzz
@given(rules(), st.lists(st.tuples(st.sampled_from(("drop", "set", "dup")), _keys, _values)))
def test_edited_rule_lines_are_refused_or_round_trip(rule, edits) -> None:  # type: ignore[no-untyped-def]
    options = dict(
        part.partition("=")[::2] for part in format_rule(rule).split(" comment=")[0].split()
    )
    for kind, key, value in edits:
        if kind == "drop":
            options.pop(key, None)
        elif kind == "set":
            options[key] = value
        else:
            options[key + " " + key] = value
    line = " ".join(f"{k}={v}" for k, v in options.items())
    with time_limit():
        rule_text(line.encode())


@fuzz
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC.+_-0123456789 ", max_size=60),
    st.sampled_from((b"", b"\0")),
    st.binary(max_size=64),
)
def test_admin_headers_are_framing_errors_or_well_formed(header, nul, payload) -> None:  # type: ignore[no-untyped-def]
    with time_limit():
        admin_wire(header.encode() + nul + payload)


def test_oversized_admin_requests_are_framing_errors() -> None:
    for data in (
        b"a" * (wire.MAX_HEADER + 1),
        b"admin.vm.List+ dom0 name dom0\0" + b"x" * (wire.MAX_PAYLOAD + 1),
        b"admin.vm.List+ dom0 name dom0",
    ):
        try:
            wire.parse_request(data)
        except wire.FramingError as err:
            assert str(err)
        else:
            raise AssertionError(f"accepted {data[:40]!r}")


@fuzz
@given(
    st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 20),
)  # fmt: skip
def test_natpmp_packets_from_fields(version, opcode, a, b, c, d, cut) -> None:  # type: ignore[no-untyped-def]
    packet = struct.pack("!BBHHHI", version, opcode, a, b, c, d)
    with time_limit():
        natpmp_packets(packet[:cut] if cut < 12 else packet)
        natpmp_packets(struct.pack("!BBHIHHI", version, opcode | 0x80, a, d, b, c, d)[: cut + 4])


@fuzz
@given(
    st.sampled_from((1, 2, 3)), st.integers(0, 3), st.integers(0, 2**32 - 1),
    st.sampled_from((0, 6, 17, 255)), st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 40)), max_size=4),
    st.integers(0, 8),
)  # fmt: skip
def test_pcp_requests_from_fields(version, opcode, lifetime, proto, port, options, cut) -> None:  # type: ignore[no-untyped-def]
    header = struct.pack(
        "!BBHI16s", version, opcode, 0, lifetime, bytes(10) + b"\xff\xff" + bytes(4)
    )
    body = struct.pack("!12sB3sHH16s", bytes(12), proto, bytes(3), port, port, bytes(16))
    packed = b"".join(
        struct.pack("!BBH", code, 0, length) + bytes((length + 3) & ~3) for code, length in options
    )
    packet = header + body + packed
    with time_limit():
        pcp_packets(packet[: len(packet) - cut])


_ACTIONS = (
    "AddPortMapping", "AddAnyPortMapping", "DeletePortMapping", "GetExternalIPAddress",
    "GetSpecificPortMappingEntry", "GetGenericPortMappingEntry", "GetStatusInfo", "Nope",
)  # fmt: skip
_ARGS = (
    "NewRemoteHost", "NewExternalPort", "NewProtocol", "NewInternalPort", "NewInternalClient",
    "NewEnabled", "NewPortMappingDescription", "NewLeaseDuration", "NewPortMappingIndex",
)  # fmt: skip
_arg_values = st.sampled_from(
    ("", "*", "TCP", "udp", "0", "80", "65535", "65536", "10.137.0.20", "10.137.0.21", "::1",
     "99999999999", "-1", "١٢", "&amp;", "x" * 2000)
) | st.text(max_size=20)  # fmt: skip


def _xml_text(value: str) -> str:
    return "".join(c for c in value if c.isprintable()).replace("&", "&amp;").replace("<", "&lt;")


@fuzz
@given(
    st.sampled_from(_ACTIONS),
    st.dictionaries(st.sampled_from(_ARGS), _arg_values, max_size=9),
    st.sampled_from(("/ctl/IPConn", "/ctl/CmnIfCfg", "/rootDesc.xml", "/x")),
    st.sampled_from(("POST", "GET", "PUT")),
    st.sampled_from(("exact", "short", "long", "none", "huge", "digits")),
)
def test_upnp_requests_from_parts(action, arguments, path, method, length) -> None:  # type: ignore[no-untyped-def]
    inner = "".join(f"<{k}>{_xml_text(v)}</{k}>" for k, v in arguments.items())
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<s:Body><u:{action} xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
        f"{inner}</u:{action}></s:Body></s:Envelope>"
    ).encode()
    declared = {
        "exact": str(len(body)), "short": str(max(0, len(body) - 9)), "long": str(len(body) + 9),
        "none": "", "huge": str(10**12), "digits": "9" * 5000,
    }[length]  # fmt: skip
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
    if declared:
        head += f"Content-Length: {declared}\r\n"
    with time_limit():
        upnp_http(head.encode() + b"\r\n" + body)


def test_a_content_length_of_thousands_of_digits_is_refused_not_a_crash() -> None:
    # Found by fuzzing: int() of over 4300 digits raised ValueError (a 500 from the catch-all).
    data = b"POST /ctl/IPConn HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    reply, asked, _ = asyncio.run(_serve_http(data))
    assert reply.startswith(b"HTTP/1.1 413 ") and asked == []


def test_an_over_long_head_is_refused() -> None:
    data = b"GET /rootDesc.xml HTTP/1.1\r\nX: " + b"a" * (http_server.MAX_HEAD * 2) + b"\r\n\r\n"
    reply, _, _ = asyncio.run(_serve_http(data))
    assert reply.startswith(b"HTTP/1.1 431 ")


def test_pcp_and_natpmp_errors_name_the_field() -> None:
    for data in (b"", b"\x02", b"\x02\x01" + bytes(22), b"\x00\x05"):
        try:
            (pcp.parse_request if pcp.is_pcp(data) else natpmp.parse_request)(data)
        except (pcp.PcpError, ValidationError) as err:
            assert err.field
