"""The NAT-PMP codec: byte layouts from RFC 6886, round trips, and hostile input."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.natpmp import wire
from qubes_portfwd.natpmp.wire import (
    ErrorResponse,
    ExternalAddressRequest,
    ExternalAddressResponse,
    MappingRequest,
    MappingResponse,
    RequestError,
    ResultCode,
)

ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
protocols = st.sampled_from(["udp", "tcp"])
mapping_requests = st.builds(
    MappingRequest, protocols, st.integers(1, 0xFFFF), ports, u32
) | st.builds(MappingRequest, protocols, ports, ports, st.just(0))
requests = st.just(ExternalAddressRequest()) | mapping_requests
responses = (
    st.builds(ExternalAddressResponse, u32, st.builds(ipaddress.IPv4Address, u32))
    | st.builds(MappingResponse, protocols, u32, ports, ports, u32)
    | st.builds(ErrorResponse, st.integers(0, 2), st.integers(1, 0xFFFF), u32)
)


def test_request_layouts_follow_rfc_6886() -> None:
    assert wire.encode_request(ExternalAddressRequest()) == b"\x00\x00"
    encoded = wire.encode_request(MappingRequest("tcp", 8080, 40001, 60))
    assert encoded == bytes.fromhex("00 02 0000 1f90 9c41 0000003c")
    assert wire.encode_request(MappingRequest("udp", 53, 0, 0))[:2] == b"\x00\x01"


def test_response_layouts_follow_rfc_6886() -> None:
    address = ExternalAddressResponse(7, ipaddress.IPv4Address("203.0.113.2"))
    assert wire.encode_response(address) == bytes.fromhex("00 80 0000 00000007 cb007102")
    mapping = MappingResponse("udp", 9, 5000, 40002, 60)
    assert wire.encode_response(mapping) == bytes.fromhex("00 81 0000 00000009 1388 9c42 0000003c")
    error = ErrorResponse(opcode=2, result=ResultCode.NOT_AUTHORIZED, epoch=3)
    assert wire.encode_response(error) == bytes.fromhex("00 82 0002 00000003")


@given(requests)
def test_requests_round_trip(request: wire.Request) -> None:
    assert wire.parse_request(wire.encode_request(request)) == request


@given(responses)
def test_responses_round_trip(response: wire.Response) -> None:
    assert wire.parse_response(wire.encode_response(response)) == response


@given(st.binary(max_size=40))
def test_any_bytes_parse_or_raise_validation_error(untrusted_data: bytes) -> None:
    for parse in (wire.parse_request, wire.parse_response):
        try:
            parse(untrusted_data)
        except ValidationError as err:
            assert err.field in {"length", "version", "opcode", "internal_port", "result", "epoch"}


def test_full_length_error_response_from_servers_that_pad_it() -> None:
    padded = bytes.fromhex("00 82 0002 00000003 1f90 0000 00000000")
    assert wire.parse_response(padded) == ErrorResponse(2, ResultCode.NOT_AUTHORIZED, 3)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "length"),
        (b"\x00\x80\x00\x00\x00\x00\x00", "length"),
        (bytes.fromhex("01 80 0000 00000000 01020304"), "version"),
        (bytes.fromhex("00 00 0000 00000000 01020304"), "opcode"),
        (bytes.fromhex("00 83 0000 00000000 01020304"), "opcode"),
        (bytes.fromhex("00 80 0000 00000000 010203"), "length"),
        (bytes.fromhex("00 80 0000 00000000 0102030405"), "length"),
        (bytes.fromhex("00 81 0000 00000000 01020304"), "length"),
        (bytes.fromhex("00 82 0000 00000000 1f90 9c41 0000003c 00"), "length"),
        (bytes.fromhex("00 82 0003 00000000 1f"), "length"),
    ],
)
def test_malformed_responses_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        wire.parse_response(data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field", "reply"),
    [
        (b"", "length", None),
        (b"\x00", "length", None),
        (b"\x02\x01" + bytes(58), "version", ResultCode.UNSUPPORTED_VERSION),
        (b"\x00\x03", "opcode", ResultCode.UNSUPPORTED_OPCODE),
        (b"\x00\x80", "opcode", None),
        (b"\x00\x00\x00", "length", None),
        (bytes.fromhex("00 02 0000 1f90 0000"), "length", None),
        (bytes.fromhex("00 02 0000 0000 0000 0000003c"), "internal_port", None),
    ],
)
def test_malformed_requests_say_how_to_answer(
    data: bytes, field: str, reply: ResultCode | None
) -> None:
    with pytest.raises(RequestError) as caught:
        wire.parse_request(data)
    assert caught.value.field == field
    assert caught.value.reply_result == reply


def test_unsupported_version_is_answered_with_opcode_128() -> None:
    with pytest.raises(RequestError) as caught:
        wire.parse_request(b"\x02\x01" + bytes(58))
    error = ErrorResponse(caught.value.opcode, caught.value.reply_result or 0, 5)
    assert wire.encode_response(error)[:4] == bytes.fromhex("00 80 0001")


def test_reserved_field_is_ignored_on_reception() -> None:
    data = bytes.fromhex("00 01 abcd 0035 0000 00000e10")
    assert wire.parse_request(data) == MappingRequest("udp", 53, 0, 3600)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"protocol": "sctp"}, "protocol"),
        ({"internal_port": 70000}, "internal_port"),
        ({"internal_port": 0}, "internal_port"),
        ({"suggested_external_port": -1}, "suggested_external_port"),
        ({"lifetime": 2**32}, "lifetime"),
    ],
)
def test_mapping_request_values_are_checked(kwargs: dict[str, object], field: str) -> None:
    values: dict[str, object] = {
        "protocol": "tcp",
        "internal_port": 80,
        "suggested_external_port": 0,
        "lifetime": 60,
    }
    values.update(kwargs)
    with pytest.raises(ValidationError) as caught:
        MappingRequest(**values)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_delete_forms() -> None:
    assert MappingRequest("tcp", 80, 0, 0).is_delete
    assert not MappingRequest("tcp", 80, 0, 0).deletes_all
    assert MappingRequest("udp", 0, 0, 0).deletes_all


def test_answers_matches_opcode_and_port() -> None:
    request = MappingRequest("tcp", 8080, 0, 60)
    assert wire.answers(request, MappingResponse("tcp", 1, 8080, 40001, 60))
    assert not wire.answers(request, MappingResponse("udp", 1, 8080, 40001, 60))
    assert not wire.answers(request, MappingResponse("tcp", 1, 8081, 40001, 60))
    assert wire.answers(request, ErrorResponse(2, ResultCode.OUT_OF_RESOURCES, 1))
    assert not wire.answers(request, ErrorResponse(1, ResultCode.OUT_OF_RESOURCES, 1))
    address = ExternalAddressResponse(1, ipaddress.IPv4Address("198.51.100.1"))
    assert wire.answers(ExternalAddressRequest(), address)
    assert not wire.answers(request, address)


def test_describe_result_names_unknown_codes_by_number() -> None:
    assert wire.describe_result(2) == "not authorized or refused"
    assert wire.describe_result(77) == "result code 77"


def test_server_lost_state_follows_rfc_6886_section_3_6() -> None:
    assert not wire.server_lost_state(100, 0.0, 160, 60.0)
    assert not wire.server_lost_state(100, 0.0, 155, 60.0)  # within 7/8 and 2 s of slack
    assert wire.server_lost_state(100, 0.0, 140, 60.0)
    assert wire.server_lost_state(100, 0.0, 3, 1.0)
