"""PCP (RFC 6887) server-side messages: parse untrusted requests, encode responses (pure).

Served: ANNOUNCE and MAP. Options: THIRD_PARTY is parsed so the daemon can refuse it,
PREFER_FAILURE is honoured, other mandatory options (codes 0-127) are refused with
UNSUPP_OPTION, optional ones (128-255) ignored. IPv4 addresses travel IPv4-mapped,
IPv6 ones as they are (RFC 6887 §5).
"""

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

VERSION = 2
NATPMP_VERSION = 0
RESPONSE_BIT = 0x80
MIN_MESSAGE = 24
MAX_MESSAGE = 1100
NONCE_LENGTH = 12
PROTOCOL_NUMBERS = {6: "tcp", 17: "udp"}
PROTOCOL_OF_NAME = {name: number for number, name in PROTOCOL_NUMBERS.items()}
# A refusal that will not change soon is cached by clients this long (RFC 6887 §7.4).
LONG_ERROR_LIFETIME = 1800
SHORT_ERROR_LIFETIME = 30

_HEADER = struct.Struct("!BBHI16s")  # version, R|opcode, reserved, lifetime, client address
_RESPONSE_HEADER = struct.Struct("!BBBBII12s")  # ..., reserved, result, lifetime, epoch, reserved
_MAP = struct.Struct("!12sB3sHH16s")  # nonce, protocol, reserved, internal, external, address
_OPTION = struct.Struct("!BBH")


class Opcode(IntEnum):
    ANNOUNCE = 0
    MAP = 1
    PEER = 2


class Result(IntEnum):
    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12


# The temporary refusals: a client may ask again soon (RFC 6887 §7.4).
_SHORT_ERRORS = frozenset({Result.NETWORK_FAILURE, Result.NO_RESOURCES, Result.USER_EX_QUOTA})


class OptionCode(IntEnum):
    THIRD_PARTY = 1
    PREFER_FAILURE = 2
    FILTER = 3


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def unmap(packed: bytes) -> Address:
    """A 16-byte PCP address field: IPv4-mapped becomes IPv4."""
    address = ipaddress.IPv6Address(packed)
    return address.ipv4_mapped or address


def mapped(address: Address) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{address}").packed
    return address.packed


@dataclass(frozen=True)
class MapRequest:
    nonce: bytes
    protocol: int
    internal_port: int
    suggested_external_port: int
    suggested_external_address: Address
    third_party: Address | None = None
    prefer_failure: bool = False

    @property
    def protocol_name(self) -> str | None:
        return PROTOCOL_NUMBERS.get(self.protocol)


@dataclass(frozen=True)
class PcpRequest:
    opcode: int
    lifetime: int
    client_address: Address
    map: MapRequest | None = None


class PcpError(ValueError):
    """A request to refuse: `result` is the code to answer with; None means drop it."""

    def __init__(self, field: str, message: str, result: Result | None, opcode: int = 0) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.result = result
        self.opcode = opcode


def is_pcp(untrusted_data: bytes) -> bool:
    """True when the datagram is for PCP rather than NAT-PMP (they share port 5351)."""
    return bool(untrusted_data) and untrusted_data[0] != NATPMP_VERSION


def _parse_options(untrusted_data: bytes, opcode: int) -> tuple[Address | None, bool]:
    third_party: Address | None = None
    prefer_failure = False
    offset = 0
    while offset < len(untrusted_data):
        if offset + _OPTION.size > len(untrusted_data):
            raise PcpError("option", "truncated header", Result.MALFORMED_OPTION, opcode)
        code, _, length = _OPTION.unpack_from(untrusted_data, offset)
        offset += _OPTION.size
        padded = (length + 3) & ~3
        if offset + padded > len(untrusted_data):
            raise PcpError("option", "longer than the message", Result.MALFORMED_OPTION, opcode)
        body = untrusted_data[offset : offset + length]
        offset += padded
        if code == OptionCode.THIRD_PARTY:
            if length != 16 or third_party is not None:
                raise PcpError(
                    "THIRD_PARTY", "expected one 16-byte address", Result.MALFORMED_OPTION, opcode
                )
            third_party = unmap(body)
        elif code == OptionCode.PREFER_FAILURE:
            if length != 0:
                raise PcpError(
                    "PREFER_FAILURE", "expected no data", Result.MALFORMED_OPTION, opcode
                )
            prefer_failure = True
        elif code < 128:
            raise PcpError("option", f"code {code} is not supported", Result.UNSUPP_OPTION, opcode)
    return third_party, prefer_failure


def parse_request(untrusted_data: bytes) -> PcpRequest:
    """A PCP request from untrusted bytes; PcpError says how to answer (or to drop it)."""
    size = len(untrusted_data)
    if size < 2 or size > MAX_MESSAGE:
        raise PcpError("length", f"expected {MIN_MESSAGE}-{MAX_MESSAGE} bytes", None)
    version, untrusted_opcode = untrusted_data[0], untrusted_data[1]
    if untrusted_opcode & RESPONSE_BIT:
        raise PcpError("opcode", "a response, not a request", None)
    opcode = untrusted_opcode
    if version != VERSION:
        raise PcpError("version", f"expected {VERSION}", Result.UNSUPP_VERSION, opcode)
    if size < MIN_MESSAGE or size % 4:
        raise PcpError("length", "expected a multiple of 4, at least 24", None)
    _, _, _, lifetime, packed_client = _HEADER.unpack_from(untrusted_data)
    client = unmap(packed_client)
    if opcode == Opcode.ANNOUNCE:
        _parse_options(untrusted_data[_HEADER.size :], opcode)
        return PcpRequest(opcode, lifetime, client)
    if opcode != Opcode.MAP:
        raise PcpError("opcode", "expected ANNOUNCE (0) or MAP (1)", Result.UNSUPP_OPCODE, opcode)
    if size < _HEADER.size + _MAP.size:
        raise PcpError("length", "too short for MAP", Result.MALFORMED_REQUEST, opcode)
    nonce, protocol, _, internal, external, packed_external = _MAP.unpack_from(
        untrusted_data, _HEADER.size
    )
    third_party, prefer_failure = _parse_options(untrusted_data[_HEADER.size + _MAP.size :], opcode)
    if protocol not in PROTOCOL_NUMBERS:
        raise PcpError("protocol", "only TCP (6) and UDP (17)", Result.UNSUPP_PROTOCOL, opcode)
    if internal == 0:
        raise PcpError("internal port", "expected 1-65535", Result.MALFORMED_REQUEST, opcode)
    request = MapRequest(
        nonce, protocol, internal, external, unmap(packed_external), third_party, prefer_failure
    )
    return PcpRequest(opcode, lifetime, client, request)


@dataclass(frozen=True)
class MapResult:
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: Address


def encode_response(
    opcode: int, result: int, lifetime: int, epoch: int, map_result: MapResult | None = None
) -> bytes:
    header = _RESPONSE_HEADER.pack(
        VERSION, (opcode & 0x7F) | RESPONSE_BIT, 0, result, lifetime, epoch, bytes(12)
    )
    if map_result is None:
        return header
    body = _MAP.pack(
        map_result.nonce,
        map_result.protocol,
        bytes(3),
        map_result.internal_port,
        map_result.external_port,
        mapped(map_result.external_address),
    )
    return header + body


def error_response(
    request: PcpRequest | None, error: PcpError, epoch: int, untrusted_data: bytes
) -> bytes:
    """The reply to a refused request: its MAP fields echoed when they could be read."""
    lifetime = SHORT_ERROR_LIFETIME if error.result in _SHORT_ERRORS else LONG_ERROR_LIFETIME
    assert error.result is not None
    echo: MapResult | None = None
    if request is not None and request.map is not None:
        m = request.map
        echo = MapResult(
            m.nonce,
            m.protocol,
            m.internal_port,
            m.suggested_external_port,
            m.suggested_external_address,
        )
    elif error.opcode == Opcode.MAP and len(untrusted_data) >= _HEADER.size + _MAP.size:
        nonce, protocol, _, internal, external, packed = _MAP.unpack_from(
            untrusted_data, _HEADER.size
        )
        echo = MapResult(nonce, protocol, internal, external, unmap(packed))
    return encode_response(error.opcode, error.result, lifetime, epoch, echo)


def encode_map_request(request: PcpRequest) -> bytes:
    """A client's MAP request (for tests and measurements; the daemon never sends one)."""
    assert request.map is not None
    m = request.map
    header = _HEADER.pack(VERSION, Opcode.MAP, 0, request.lifetime, mapped(request.client_address))
    body = _MAP.pack(
        m.nonce,
        m.protocol,
        bytes(3),
        m.internal_port,
        m.suggested_external_port,
        mapped(m.suggested_external_address),
    )
    options = b""
    if m.third_party is not None:
        options += _OPTION.pack(OptionCode.THIRD_PARTY, 0, 16) + mapped(m.third_party)
    if m.prefer_failure:
        options += _OPTION.pack(OptionCode.PREFER_FAILURE, 0, 0)
    return header + body + options


def parse_map_response(untrusted_data: bytes) -> tuple[int, int, int, MapResult | None]:
    """(result, lifetime, epoch, map fields) of a response, for tests and measurements."""
    if len(untrusted_data) < _RESPONSE_HEADER.size:
        raise ValueError("response shorter than 24 bytes")
    _, _, _, result, lifetime, epoch, _ = _RESPONSE_HEADER.unpack_from(untrusted_data)
    if len(untrusted_data) < _RESPONSE_HEADER.size + _MAP.size:
        return result, lifetime, epoch, None
    nonce, protocol, _, internal, external, packed = _MAP.unpack_from(
        untrusted_data, _RESPONSE_HEADER.size
    )
    return result, lifetime, epoch, MapResult(nonce, protocol, internal, external, unmap(packed))
