"""Request framing and reply encoding of the qubesd wire protocol (pure)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_lab.qubesd.wire import (
    MAX_HEADER,
    MAX_PAYLOAD,
    FramingError,
    encode_error,
    encode_ok,
    parse_request,
    split_header,
)
from qubes_portfwd.client.connection import QubesdError, frame_request, parse_reply


def test_request_as_qubes_client_frames_it() -> None:
    request = parse_request(b"admin.vm.firewall.Set+ dom0 name work\0action=accept\n")
    assert (request.method, request.arg, request.source, request.dest) == (
        "admin.vm.firewall.Set",
        "",
        "dom0",
        "work",
    )
    assert request.untrusted_payload == b"action=accept\n"


def test_argument_after_plus_and_keyword_adminvm() -> None:
    request = parse_request(b"admin.vm.property.Get+netvm dom0 keyword adminvm\0")
    assert (request.arg, request.dest) == ("netvm", "dom0")


def test_header_without_plus_has_empty_arg() -> None:
    assert parse_request(b"admin.vm.List dom0 name dom0\0").arg == ""


@pytest.mark.parametrize(
    "untrusted",
    [
        b"admin.vm.List+ dom0 name dom0",  # no NUL: the request ended early
        b"admin.vm.List+ dom0 dom0\0",  # three fields
        b"admin.vm.List+ dom0 uuid dom0\0",  # only names are destinations
        "admin.vm.Lïst+ dom0 name dom0\0".encode(),  # not ASCII
        b"admin.vm.List+a;b dom0 name dom0\0",  # bad argument characters
        b"Admin vm dom0 name dom0\0",  # five fields
        b"admin.vm.List+ dom0 name ../etc\0",  # destination is no name
    ],
)
def test_bad_framing_is_refused(untrusted: bytes) -> None:
    with pytest.raises(FramingError):
        parse_request(untrusted)


def test_header_limit() -> None:
    assert split_header(b"x" * MAX_HEADER) is None  # may still get its NUL
    with pytest.raises(FramingError, match="header"):
        split_header(b"x" * (MAX_HEADER + 1))


def test_payload_limit() -> None:
    header = b"admin.vm.firewall.Set+ dom0 name work\0"
    assert len(parse_request(header + b"a" * MAX_PAYLOAD).untrusted_payload) == MAX_PAYLOAD
    with pytest.raises(FramingError, match="payload"):
        parse_request(header + b"a" * (MAX_PAYLOAD + 1))


def test_error_reply_layout() -> None:
    reply = encode_error("QubesVMNotFoundError", "No such domain: 'x'")
    assert reply == b"2\0QubesVMNotFoundError\0\0No such domain: 'x'\0"


def test_error_message_with_percent_survives_the_clients_formatting() -> None:
    with pytest.raises(QubesdError) as caught:
        parse_reply(encode_error("QubesValueError", "100% wrong %s"))
    assert caught.value.message == "100% wrong %s"


def test_error_with_args_is_formatted_by_the_client() -> None:
    with pytest.raises(QubesdError) as caught:
        parse_reply(encode_error("QubesException", "%s is %s", ("work", "down")))
    assert (caught.value.exc_type, caught.value.message) == ("QubesException", "work is down")


@given(st.binary(max_size=300))
def test_ok_reply_round_trip(payload: bytes) -> None:
    assert parse_reply(encode_ok(payload)) == payload


@given(
    st.text(alphabet=st.characters(exclude_characters="\0", exclude_categories=["Cs"])),
)
def test_error_round_trip(message: str) -> None:
    with pytest.raises(QubesdError) as caught:
        parse_reply(encode_error("QubesValueError", message))
    assert caught.value.message == message


def test_client_framing_is_what_the_service_parses() -> None:
    request = parse_request(frame_request("work", "admin.vm.portfwd.Remove", "0123456789ab", b"x"))
    assert (request.method, request.arg, request.dest, request.untrusted_payload) == (
        "admin.vm.portfwd.Remove",
        "0123456789ab",
        "work",
        b"x",
    )
