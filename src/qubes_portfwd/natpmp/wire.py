"""NAT-PMP (RFC 6886) messages as values, for both sides: encode, and parse untrusted bytes.

Requests: opcode 0 (external address), 1 (map UDP), 2 (map TCP). Responses carry the request
opcode + 128, a result code and the server's seconds-since-start-of-epoch. A response with a
non-zero result code is an `ErrorResponse` whatever its length (8 bytes per RFC 6886 §3.5, or
the full success length as some servers send). Parsing never trusts a length or a field:
every rejection is a `ValidationError` naming the field.
"""

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from ..model.errors import ValidationError

NATPMP_PORT = 5351  # the server listens here; clients send from any port
VERSION = 0
RESPONSE_BIT = 0x80
MAX_PORT = 0xFFFF
MAX_U32 = 0xFFFF_FFFF
# RFC 6886 §3.3: the recommended lifetime of a mapping request, two hours.
RECOMMENDED_LIFETIME = 7200
MAX_MESSAGE = 16  # the longest NAT-PMP message; a receive buffer of this + 1 detects longer

Protocol = Literal["udp", "tcp"]


class Opcode(IntEnum):
    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class ResultCode(IntEnum):
    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2  # "Not Authorized/Refused"
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


_RESULT_TEXT = {
    ResultCode.SUCCESS: "success",
    ResultCode.UNSUPPORTED_VERSION: "unsupported version",
    ResultCode.NOT_AUTHORIZED: "not authorized or refused",
    ResultCode.NETWORK_FAILURE: "network failure",
    ResultCode.OUT_OF_RESOURCES: "out of resources",
    ResultCode.UNSUPPORTED_OPCODE: "unsupported opcode",
}

_OPCODE_OF: dict[Protocol, Opcode] = {"udp": Opcode.MAP_UDP, "tcp": Opcode.MAP_TCP}
_PROTOCOL_OF: dict[int, Protocol] = {Opcode.MAP_UDP: "udp", Opcode.MAP_TCP: "tcp"}

# Layouts after the 2-byte (version, opcode) header, network byte order.
_MAP_REQUEST = struct.Struct("!BBHHHI")  # version, opcode, reserved, internal, suggested, life
_RESPONSE_HEAD = struct.Struct("!BBHI")  # version, opcode, result, epoch
_ADDRESS_RESPONSE = struct.Struct("!BBHI4s")
_MAP_RESPONSE = struct.Struct("!BBHIHHI")  # ..., internal, mapped external, lifetime

EXTERNAL_ADDRESS_REQUEST_LENGTH = 2
MAP_REQUEST_LENGTH = _MAP_REQUEST.size  # 12
ERROR_RESPONSE_LENGTH = _RESPONSE_HEAD.size  # 8
ADDRESS_RESPONSE_LENGTH = _ADDRESS_RESPONSE.size  # 12
MAP_RESPONSE_LENGTH = _MAP_RESPONSE.size  # 16


def describe_result(code: int) -> str:
    """Human text for a result code; codes RFC 6886 does not define are named by number."""
    try:
        return _RESULT_TEXT[ResultCode(code)]
    except ValueError:
        return f"result code {code}"


def opcode_for(protocol: Protocol) -> Opcode:
    return _OPCODE_OF[protocol]


def _check_range(field: str, value: int, lowest: int, highest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise ValidationError(field, f"expected an integer {lowest}-{highest}")


def _check_protocol(protocol: str) -> None:
    if protocol not in _OPCODE_OF:
        raise ValidationError("protocol", "expected udp or tcp")


# -- requests (client -> server) --


@dataclass(frozen=True)
class ExternalAddressRequest:
    """Opcode 0: what is the gateway's external IPv4 address?"""


@dataclass(frozen=True)
class MappingRequest:
    """Opcode 1/2: map (or renew, or with lifetime 0 delete) `internal_port` for this client.

    `suggested_external_port` 0 lets the server choose. Lifetime 0 with internal port 0
    deletes all of the client's mappings of that protocol (RFC 6886 §3.4).
    """

    protocol: Protocol
    internal_port: int
    suggested_external_port: int
    lifetime: int

    def __post_init__(self) -> None:
        _check_protocol(self.protocol)
        _check_range("internal_port", self.internal_port, 0, MAX_PORT)
        _check_range("suggested_external_port", self.suggested_external_port, 0, MAX_PORT)
        _check_range("lifetime", self.lifetime, 0, MAX_U32)
        if self.internal_port == 0 and self.lifetime != 0:
            raise ValidationError(
                "internal_port", "expected 1-65535 (0 only with lifetime 0: delete all)"
            )

    @property
    def is_delete(self) -> bool:
        return self.lifetime == 0

    @property
    def deletes_all(self) -> bool:
        return self.lifetime == 0 and self.internal_port == 0


Request = ExternalAddressRequest | MappingRequest


class RequestError(ValidationError):
    """A request the server cannot serve; `reply_result` is the result code to answer with.

    `reply_result` None means the packet deserves no answer (RFC 6886: malformed or not a
    request). `opcode` is the request's opcode as received (for the error response).
    """

    def __init__(
        self, field: str, message: str, *, opcode: int, reply_result: ResultCode | None
    ) -> None:
        super().__init__(field, message)
        self.opcode = opcode
        self.reply_result = reply_result


def encode_request(request: Request) -> bytes:
    if isinstance(request, ExternalAddressRequest):
        return bytes((VERSION, Opcode.EXTERNAL_ADDRESS))
    return _MAP_REQUEST.pack(
        VERSION,
        opcode_for(request.protocol),
        0,
        request.internal_port,
        request.suggested_external_port,
        request.lifetime,
    )


def parse_request(untrusted_data: bytes) -> Request:
    """A request from untrusted bytes; RequestError says why not and how to answer."""
    if len(untrusted_data) < 2:
        raise RequestError("length", "expected at least 2 bytes", opcode=0, reply_result=None)
    untrusted_version, untrusted_opcode = untrusted_data[0], untrusted_data[1]
    if untrusted_opcode & RESPONSE_BIT:
        raise RequestError(
            "opcode", "expected a request (opcode below 128)", opcode=0, reply_result=None
        )
    if untrusted_version != VERSION:
        # RFC 6886 §3.5 (errata 3618): answered with opcode 128 and result 1.
        raise RequestError(
            "version",
            f"expected {VERSION}",
            opcode=0,
            reply_result=ResultCode.UNSUPPORTED_VERSION,
        )
    opcode = untrusted_opcode
    if opcode == Opcode.EXTERNAL_ADDRESS:
        if len(untrusted_data) != EXTERNAL_ADDRESS_REQUEST_LENGTH:
            raise RequestError(
                "length",
                f"expected {EXTERNAL_ADDRESS_REQUEST_LENGTH} bytes for opcode 0",
                opcode=opcode,
                reply_result=None,
            )
        return ExternalAddressRequest()
    if opcode not in _PROTOCOL_OF:
        raise RequestError(
            "opcode",
            "expected 0, 1 or 2",
            opcode=opcode,
            reply_result=ResultCode.UNSUPPORTED_OPCODE,
        )
    if len(untrusted_data) != MAP_REQUEST_LENGTH:
        raise RequestError(
            "length",
            f"expected {MAP_REQUEST_LENGTH} bytes for opcode {opcode}",
            opcode=opcode,
            reply_result=None,
        )
    # The reserved field is ignored on reception (RFC 6886 §3.3).
    _, _, _, internal_port, suggested_port, lifetime = _MAP_REQUEST.unpack(untrusted_data)
    try:
        return MappingRequest(_PROTOCOL_OF[opcode], internal_port, suggested_port, lifetime)
    except ValidationError as err:
        raise RequestError(err.field, err.message, opcode=opcode, reply_result=None) from None


# -- responses (server -> client) --


@dataclass(frozen=True)
class ExternalAddressResponse:
    """Opcode 128, success: the gateway's external address."""

    epoch: int
    external_address: ipaddress.IPv4Address

    def __post_init__(self) -> None:
        _check_range("epoch", self.epoch, 0, MAX_U32)
        if not isinstance(self.external_address, ipaddress.IPv4Address):
            raise ValidationError("external_address", "expected an IPv4 address")


@dataclass(frozen=True)
class MappingResponse:
    """Opcode 129/130, success: `internal_port` is reachable at `external_port` for `lifetime` s.

    A deletion is confirmed with external port 0 and lifetime 0.
    """

    protocol: Protocol
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int

    def __post_init__(self) -> None:
        _check_protocol(self.protocol)
        _check_range("epoch", self.epoch, 0, MAX_U32)
        _check_range("internal_port", self.internal_port, 0, MAX_PORT)
        _check_range("external_port", self.external_port, 0, MAX_PORT)
        _check_range("lifetime", self.lifetime, 0, MAX_U32)


@dataclass(frozen=True)
class ErrorResponse:
    """Any response with a non-zero result code; `opcode` is the request's (without the 128)."""

    opcode: int
    result: int
    epoch: int

    def __post_init__(self) -> None:
        _check_range("opcode", self.opcode, 0, RESPONSE_BIT - 1)
        _check_range("result", self.result, 1, MAX_PORT)
        _check_range("epoch", self.epoch, 0, MAX_U32)

    @property
    def text(self) -> str:
        return describe_result(self.result)


Response = ExternalAddressResponse | MappingResponse | ErrorResponse


def encode_response(response: Response) -> bytes:
    if isinstance(response, ErrorResponse):
        return _RESPONSE_HEAD.pack(
            VERSION, response.opcode | RESPONSE_BIT, response.result, response.epoch
        )
    if isinstance(response, ExternalAddressResponse):
        return _ADDRESS_RESPONSE.pack(
            VERSION,
            Opcode.EXTERNAL_ADDRESS | RESPONSE_BIT,
            ResultCode.SUCCESS,
            response.epoch,
            response.external_address.packed,
        )
    return _MAP_RESPONSE.pack(
        VERSION,
        opcode_for(response.protocol) | RESPONSE_BIT,
        ResultCode.SUCCESS,
        response.epoch,
        response.internal_port,
        response.external_port,
        response.lifetime,
    )


def parse_response(untrusted_data: bytes) -> Response:
    """A response from untrusted bytes, or ValidationError naming the bad field."""
    if len(untrusted_data) < ERROR_RESPONSE_LENGTH:
        raise ValidationError("length", f"expected at least {ERROR_RESPONSE_LENGTH} bytes")
    version, untrusted_opcode, result, epoch = _RESPONSE_HEAD.unpack_from(untrusted_data)
    if version != VERSION:
        raise ValidationError("version", f"expected {VERSION}")
    if not untrusted_opcode & RESPONSE_BIT:
        raise ValidationError("opcode", "expected a response (opcode 128 or above)")
    opcode = untrusted_opcode & ~RESPONSE_BIT
    if opcode not in (Opcode.EXTERNAL_ADDRESS, *_PROTOCOL_OF):
        raise ValidationError("opcode", "expected 128, 129 or 130")
    full_length = MAP_RESPONSE_LENGTH if opcode in _PROTOCOL_OF else ADDRESS_RESPONSE_LENGTH
    if result != ResultCode.SUCCESS:
        if len(untrusted_data) not in (ERROR_RESPONSE_LENGTH, full_length):
            raise ValidationError(
                "length", f"expected {ERROR_RESPONSE_LENGTH} or {full_length} bytes for an error"
            )
        return ErrorResponse(opcode=opcode, result=result, epoch=epoch)
    if len(untrusted_data) != full_length:
        raise ValidationError("length", f"expected {full_length} bytes for opcode {opcode}")
    if opcode == Opcode.EXTERNAL_ADDRESS:
        packed_address = _ADDRESS_RESPONSE.unpack(untrusted_data)[4]
        return ExternalAddressResponse(epoch, ipaddress.IPv4Address(packed_address))
    _, _, _, _, internal_port, external_port, lifetime = _MAP_RESPONSE.unpack(untrusted_data)
    return MappingResponse(_PROTOCOL_OF[opcode], epoch, internal_port, external_port, lifetime)


def answers(request: Request, response: Response) -> bool:
    """Whether `response` is the answer to `request` (same opcode; same port when it says)."""
    if isinstance(request, ExternalAddressRequest):
        return isinstance(response, ExternalAddressResponse) or (
            isinstance(response, ErrorResponse) and response.opcode == Opcode.EXTERNAL_ADDRESS
        )
    if isinstance(response, ErrorResponse):
        return response.opcode == opcode_for(request.protocol)
    return (
        isinstance(response, MappingResponse)
        and response.protocol == request.protocol
        and response.internal_port == request.internal_port
    )


def server_lost_state(previous_epoch: int, previous_seen: float, epoch: int, seen: float) -> bool:
    """RFC 6886 §3.6: the server's epoch fell behind the client's clock, so it rebooted.

    `previous_seen` and `seen` are the client's own monotonic times of the two responses.
    The 7/8 and 2 s slack allow for clock drift and delivery delay, as the RFC says.
    """
    elapsed = max(0.0, seen - previous_seen)
    return epoch < previous_epoch or epoch + 2 < previous_epoch + elapsed * 7 / 8
