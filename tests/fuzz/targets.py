"""Fuzz targets: one function per parser of untrusted input, taking raw bytes.

Each target feeds the bytes to a parser and checks the properties that hold for any input:
only the parser's documented error type comes out, the error names its field, and whatever
is accepted re-validates (formats back to text the same parser reads as the same value).
Any other exception, or an AssertionError, is a finding. The same functions run under
hypothesis in the normal suite and under atheris (coverage-guided) in `run.py`.
"""

import asyncio
import ipaddress
from collections.abc import Callable

from qubes_lab.qubes_firewall.entries import FIREWALL_PREFIX, format_firewall, parse_firewall
from qubes_lab.qubesd import wire
from qubes_lab.qubesd.firewall_xml import firewall_xml_bytes, parse_firewall_xml
from qubes_lab.qubesd.rule_properties import rule_from_properties, rule_properties
from qubes_portfwd.agent.entries import parse_entries
from qubes_portfwd.controller.nat_mapping import MAX_DESCRIPTION, comment_for, parse_nat_request
from qubes_portfwd.model.entries import FORWARD_PREFIX, format_hop, hop_key, parse_hop
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import UntilReboot
from qubes_portfwd.model.rule_text import format_rule, parse_rule, parse_rules
from qubes_portfwd.natd import http_server, pcp, upnp_soap
from qubes_portfwd.natd.dom0 import Answer, Verdict
from qubes_portfwd.natd.mappings import MappingTable
from qubes_portfwd.natd.port_control import PortControlServer
from qubes_portfwd.natd.upnp_actions import WanIpConnection
from qubes_portfwd.natpmp import wire as natpmp

FUZZ_BOOT_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"
UPNP_ERROR_CODES = frozenset(
    value for name, value in vars(upnp_soap).items() if name.isupper() and isinstance(value, int)
)


def check_validation_error(err: ValidationError) -> None:
    """A clear error: it names a field and says what is wrong."""
    assert err.field and err.message, f"error without field or message: {err!r}"
    assert len(str(err)) < 2000, "an error message echoes too much of the input"


def _text(data: bytes) -> str:
    # Surrogates cannot reach a parser (the service decodes ASCII, files are UTF-8).
    return data.decode("utf-8", errors="replace")


def rule_text(data: bytes) -> None:
    """The Admin API rule line (and a whole Set payload): accepted rules round-trip."""
    untrusted_text = _text(data)
    try:
        parse_rules(untrusted_text)
    except ValidationError as err:
        check_validation_error(err)
    try:
        rule = parse_rule(untrusted_text)
    except ValidationError as err:
        check_validation_error(err)
        return
    line = format_rule(rule)
    assert parse_rule(line) == rule, f"{untrusted_text!r} -> {line!r} reads back differently"
    assert rule_from_properties(rule_properties(rule)) == rule


def firewall_xml(data: bytes) -> None:
    """firewall.xml v1/v2: refused with ValidationError, or saved and re-read unchanged."""
    try:
        rules = parse_firewall_xml(data)
    except ValidationError as err:
        check_validation_error(err)
        return
    storable = [
        r for r in rules if not (isinstance(r.expire, UntilReboot) and not r.expire.boot_id)
    ]
    if len(storable) != len(rules):
        return  # `boot` unbound cannot be stored by design; the service binds it first
    # now=-1: nothing has expired, so every rule must survive the save.
    saved = firewall_xml_bytes(rules, now=-1, boot_id=FUZZ_BOOT_ID)
    reread = parse_firewall_xml(saved)
    live = [
        r
        for r in rules
        if not (isinstance(r.expire, UntilReboot) and r.expire.boot_id != FUZZ_BOOT_ID)
    ]
    assert reread == live, "save-then-load changed the rules"


def admin_wire(data: bytes) -> None:
    """qubesd framing: FramingError or a request whose fields match the allowed forms."""
    try:
        request = wire.parse_request(data)
    except wire.FramingError as err:
        assert str(err), "framing error without a message"
        return
    header = f"{request.method}+{request.arg} {request.source} name {request.dest}"
    assert request.method and request.source and request.dest
    assert len(header) <= wire.MAX_HEADER + 20  # the header may say `keyword adminvm`
    assert len(request.untrusted_payload) <= wire.MAX_PAYLOAD
    # An error reply carrying any text (e.g. echoing the input) keeps its framing.
    reply = wire.encode_error("QubesValueError", _text(data[:300]))
    assert reply.startswith(wire.ERROR_PREFIX) and reply.count(b"\0") == 4


def _split_entry(data: bytes) -> tuple[str, str]:
    key, _, value = _text(data).partition("\n")
    return key, value


def hop_entry(data: bytes) -> None:
    """`/qubes-portfwd/<id>/<4|6>` entries: accepted hops format back to the same hop."""
    untrusted_key, untrusted_value = _split_entry(data)
    for key in (untrusted_key, FORWARD_PREFIX + untrusted_key):
        try:
            hop = parse_hop(key, untrusted_value)
        except ValidationError as err:
            check_validation_error(err)
            continue
        assert parse_hop(hop_key(hop), format_hop(hop)) == hop
        assert hop_key(hop) == key


def firewall_entry(data: bytes) -> None:
    """`/qubes-firewall/<ip>/…` groups as the lab's qubes-firewall worker reads them:
    accepted entries format back to the same entry."""
    lines = _text(data).split("\n")
    untrusted_address, untrusted_lines = lines[0], lines[1:]
    untrusted_values = dict(line.partition("=")[::2] for line in untrusted_lines)
    try:
        entry = parse_firewall(untrusted_address, untrusted_values)
    except ValidationError as err:
        check_validation_error(err)
        return
    base = f"{FIREWALL_PREFIX}{entry.address}/"
    formatted = {k[len(base) :]: v for k, v in format_firewall(entry).items()}
    assert parse_firewall(str(entry.address), formatted) == entry


def agent_entries(data: bytes) -> None:
    """The agent's whole-store parse never raises: bad keys become reported errors, and
    Qubes' `/qubes-firewall/` keys are none of its business."""
    untrusted_entries: dict[str, str] = {}
    for line in _text(data).split("\n"):
        key, _, value = line.partition(" ")
        prefix = FIREWALL_PREFIX if key[:1] == "f" else FORWARD_PREFIX
        untrusted_entries[prefix + key[1:]] = value
    parsed = parse_entries(untrusted_entries)
    for key in parsed.errors:
        assert key in untrusted_entries and key.startswith(FORWARD_PREFIX)
    accepted = {hop_key(h) for h in parsed.hops}
    assert not accepted & set(parsed.errors), "a key is both applied and refused"


def natpmp_packets(data: bytes) -> None:
    """NAT-PMP both ways: ValidationError (RequestError) or a value that encodes back."""
    try:
        request = natpmp.parse_request(data)
    except natpmp.RequestError as err:
        check_validation_error(err)
        assert 0 <= err.opcode < 256
    else:
        assert natpmp.parse_request(natpmp.encode_request(request)) == request
    try:
        response = natpmp.parse_response(data)
    except ValidationError as err:
        check_validation_error(err)
    else:
        assert natpmp.parse_response(natpmp.encode_response(response)) == response


def pcp_packets(data: bytes) -> None:
    """PCP requests: PcpError (its reply encodes) or a request; the reply parses back."""
    request = None
    try:
        request = pcp.parse_request(data)
    except pcp.PcpError as err:
        assert err.field and str(err)
        if err.result is not None:
            reply = pcp.error_response(None, err, 7, data)
            result, _, epoch, _ = pcp.parse_map_response(reply)
            assert (result, epoch) == (err.result, 7)
        return
    if request.map is not None:
        assert request.map.protocol_name in ("tcp", "udp")
        assert 1 <= request.map.internal_port <= 65535
        again = pcp.parse_request(pcp.encode_map_request(request))
        assert again.map is not None and again.map.internal_port == request.map.internal_port


class _FixedAsker:
    """dom0's stand-in for the fuzzer: refuses everything (no rule is ever made)."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    async def __call__(self, ask: object) -> object:
        self.asked.append(ask)
        return Answer(Verdict.REFUSED)


async def _no_address(sender: object) -> ipaddress.IPv4Address | None:
    return None


async def _serve_http(data: bytes) -> tuple[bytes, list[object], ipaddress.IPv4Address]:
    asker = _FixedAsker()
    actions = WanIpConnection(asker, _no_address, MappingTable())  # type: ignore[arg-type]
    server = http_server.UpnpHttpServer(actions, "http://10.137.0.5:5000/", "fuzz")
    reader = asyncio.StreamReader(limit=http_server.MAX_HEAD)
    reader.feed_data(data)
    reader.feed_eof()
    sender = ipaddress.IPv4Address("10.137.0.20")
    reply = await server._reply_to(reader, (str(sender), 40000))
    return reply, asker.asked, sender


def upnp_http(data: bytes) -> None:
    """UPnP's HTTP + SOAP handler: always an HTTP reply, never a 500 from a crash."""
    reply, asked, sender = asyncio.run(_serve_http(data))
    status = reply.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 "), status
    if status.startswith(b"HTTP/1.1 500"):
        assert b"<errorCode>" in reply, "a 500 without a UPnP error is a crash"
    for ask in asked:
        assert ask.client == sender, "asked dom0 about another client"  # type: ignore[attr-defined]


def upnp_soap_body(data: bytes) -> None:
    """The SOAP body parser alone (no HTTP around it): SoapError with a UPnP code."""
    try:
        call = upnp_soap.parse_call(data)
    except upnp_soap.SoapError as err:
        assert err.code in UPNP_ERROR_CODES and err.description
        return
    assert call.action
    upnp_soap.parse_search(data)


class _GrantingAsker:
    """dom0's stand-in that grants every mapping (on a port of its choice)."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    async def __call__(self, ask: object) -> object:
        self.asked.append(ask)
        address = ipaddress.IPv4Address("192.0.2.1")
        return Answer(Verdict.GRANTED, address, 40000, 600)


async def _serve_port_control(data: bytes) -> tuple[bytes | None, list[object]]:
    asker = _GrantingAsker()
    server = PortControlServer(asker, _no_address, MappingTable())  # type: ignore[arg-type]
    sender = ipaddress.IPv4Address("10.137.0.20")
    if pcp.is_pcp(data):
        return await server._pcp(data, sender), asker.asked
    return await server._natpmp(data, sender), asker.asked


def port_control(data: bytes) -> None:
    """NAT-PMP/PCP server on one datagram: no reply or a well-formed one; asks only for the
    sender."""
    reply, asked = asyncio.run(_serve_port_control(data))
    for ask in asked:
        assert str(ask.client) == "10.137.0.20"  # type: ignore[attr-defined]
    if reply is None:
        return
    if pcp.is_pcp(data):
        pcp.parse_map_response(reply)
        assert reply[0] == pcp.VERSION and reply[1] & pcp.RESPONSE_BIT
        return
    # RFC 6886 §3.5: any opcode gets a reply with opcode + 128 (result 5 if unsupported).
    assert reply[0] == natpmp.VERSION and reply[1] & natpmp.RESPONSE_BIT
    result = int.from_bytes(reply[2:4], "big")
    if result == natpmp.ResultCode.SUCCESS:
        natpmp.parse_response(reply)
    else:
        assert len(reply) == natpmp.ERROR_RESPONSE_LENGTH


def nat_request(data: bytes) -> None:
    """A network qube's NatRequest line to dom0: refused, or fields whose description makes
    a valid rule comment."""
    try:
        fields = parse_nat_request(_text(data))
    except ValidationError as err:
        check_validation_error(err)
        return
    assert len(fields.description) <= MAX_DESCRIPTION
    rule = parse_rule("action=accept comment=" + comment_for(fields.origin, fields.description))
    assert rule.comment == comment_for(fields.origin, fields.description)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "nat_request": nat_request,
    "port_control": port_control,
    "rule_text": rule_text,
    "firewall_xml": firewall_xml,
    "admin_wire": admin_wire,
    "hop_entry": hop_entry,
    "firewall_entry": firewall_entry,
    "agent_entries": agent_entries,
    "natpmp": natpmp_packets,
    "pcp": pcp_packets,
    "upnp_http": upnp_http,
    "upnp_soap": upnp_soap_body,
}
