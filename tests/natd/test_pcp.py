"""PCP codec (RFC 6887): round trips and hostile requests."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.natd import pcp

addresses4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
ports = st.integers(0, 65535)


def map_request(**changes: object) -> pcp.PcpRequest:
    fields: dict[str, object] = {
        "nonce": bytes(range(12)),
        "protocol": 6,
        "internal_port": 8080,
        "suggested_external_port": 18080,
        "suggested_external_address": ipaddress.IPv4Address(0),
    }
    fields.update(changes)
    return pcp.PcpRequest(
        pcp.Opcode.MAP,
        600,
        ipaddress.IPv4Address("10.137.0.6"),
        pcp.MapRequest(**fields),  # type: ignore[arg-type]
    )


@given(
    nonce=st.binary(min_size=12, max_size=12),
    protocol=st.sampled_from([6, 17]),
    internal=st.integers(1, 65535),
    external=ports,
    lifetime=st.integers(0, 2**32 - 1),
    client=addresses4,
    third_party=st.none() | addresses4,
    prefer_failure=st.booleans(),
)
def test_map_request_round_trip(
    nonce: bytes,
    protocol: int,
    internal: int,
    external: int,
    lifetime: int,
    client: ipaddress.IPv4Address,
    third_party: ipaddress.IPv4Address | None,
    prefer_failure: bool,
) -> None:
    m = pcp.MapRequest(
        nonce, protocol, internal, external, ipaddress.IPv4Address(0), third_party, prefer_failure
    )
    request = pcp.PcpRequest(pcp.Opcode.MAP, lifetime, client, m)
    assert pcp.parse_request(pcp.encode_map_request(request)) == request


@given(st.binary(max_size=1200))
def test_any_bytes_parse_or_raise_pcp_error(data: bytes) -> None:
    try:
        pcp.parse_request(data)
    except pcp.PcpError as err:
        assert err.result is None or isinstance(err.result, pcp.Result)


@given(
    nonce=st.binary(min_size=12, max_size=12),
    external=ports,
    address=addresses4,
    lifetime=st.integers(0, 2**32 - 1),
)
def test_map_response_round_trip(
    nonce: bytes, external: int, address: ipaddress.IPv4Address, lifetime: int
) -> None:
    result = pcp.MapResult(nonce, 17, 53, external, address)
    data = pcp.encode_response(pcp.Opcode.MAP, pcp.Result.SUCCESS, lifetime, 7, result)
    assert len(data) == 60 and data[1] == 0x81
    assert pcp.parse_map_response(data) == (0, lifetime, 7, result)


@pytest.mark.parametrize(
    ("data", "result"),
    [
        (b"\x02", None),  # short
        (b"\x02\x01" + bytes(20), None),  # shorter than the header
        (b"\x02\x81" + bytes(58), None),  # a response, not a request
        (b"\x02\x01" + bytes(2000), None),  # oversized
        (b"\x02\x01" + bytes(23), None),  # not a multiple of 4
        (b"\x01\x01" + bytes(58), pcp.Result.UNSUPP_VERSION),
        (b"\x02\x02" + bytes(58), pcp.Result.UNSUPP_OPCODE),  # PEER is not served
        (b"\x02\x01" + bytes(30), pcp.Result.MALFORMED_REQUEST),  # MAP too short
    ],
)
def test_hostile_requests(data: bytes, result: pcp.Result | None) -> None:
    with pytest.raises(pcp.PcpError) as refused:
        pcp.parse_request(data)
    assert refused.value.result == result


def test_map_checks_protocol_port_and_options() -> None:
    with pytest.raises(pcp.PcpError) as refused:
        pcp.parse_request(pcp.encode_map_request(map_request(protocol=0)))
    assert refused.value.result == pcp.Result.UNSUPP_PROTOCOL
    with pytest.raises(pcp.PcpError) as refused:
        pcp.parse_request(pcp.encode_map_request(map_request(internal_port=0)))
    assert refused.value.result == pcp.Result.MALFORMED_REQUEST
    filter_option = bytes([3, 0, 0, 20]) + bytes(20)  # FILTER: mandatory, not served
    with pytest.raises(pcp.PcpError) as refused:
        pcp.parse_request(pcp.encode_map_request(map_request()) + filter_option)
    assert refused.value.result == pcp.Result.UNSUPP_OPTION
    truncated = bytes([1, 0, 0, 16]) + bytes(8)  # THIRD_PARTY longer than the message
    with pytest.raises(pcp.PcpError) as refused:
        pcp.parse_request(pcp.encode_map_request(map_request()) + truncated)
    assert refused.value.result == pcp.Result.MALFORMED_OPTION
    optional = bytes([200, 0, 0, 1, 9, 0, 0, 0])  # optional options are ignored
    assert pcp.parse_request(pcp.encode_map_request(map_request()) + optional).map is not None


def test_error_response_echoes_the_map_fields() -> None:
    request = map_request()
    error = pcp.PcpError("x", "refused", pcp.Result.NOT_AUTHORIZED, pcp.Opcode.MAP)
    data = pcp.error_response(request, error, 5, b"")
    result, lifetime, epoch, echoed = pcp.parse_map_response(data)
    assert (result, epoch) == (pcp.Result.NOT_AUTHORIZED, 5) and lifetime > 0
    assert echoed is not None and echoed.nonce == request.map.nonce  # type: ignore[union-attr]
