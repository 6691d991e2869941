"""The header qrexec writes to our dom0 socket service: parsed, or refused naming the field."""

import pytest

from qubes_portfwd.client.connection import QubesdError, parse_reply
from qubes_portfwd.qrexec.header import (
    MAX_HEADER,
    HeaderError,
    ServiceCall,
    parse_header,
    split_header,
)
from qubes_portfwd.qrexec.reply import encode_error, encode_ok


def test_a_call_to_adminvm_by_keyword() -> None:
    call = parse_header(b"qubes.PortfwdNat+Request sys-firewall keyword adminvm")
    assert call == ServiceCall("qubes.PortfwdNat", "Request", "sys-firewall", "@adminvm")


def test_a_call_to_dom0_by_name_and_without_argument() -> None:
    assert parse_header(b"qubes.PortfwdNat+ sys-net name dom0") == ServiceCall(
        "qubes.PortfwdNat", "", "sys-net", "dom0"
    )
    assert parse_header(b"qubes.PortfwdNat sys-net name dom0").argument == ""


def test_dom0_by_its_uuid_is_dom0() -> None:
    header = b"qubes.PortfwdNat+Address sys-net name uuid:00000000-0000-0000-0000-000000000000"
    assert parse_header(header).target == "dom0"


def test_the_argument_keeps_further_plus_signs() -> None:
    assert parse_header(b"qubes.PortfwdNat+a+b sys-net keyword adminvm").argument == "a+b"


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (b"qubes.PortfwdNat+Request sys-net keyword", "header"),
        (b"qubes.PortfwdNat+Request sys-net keyword adminvm extra", "header"),
        (b"qubes.PortfwdNat+Request  sys-net keyword adminvm", "header"),
        (b"qubes.Portfwd\xc3\xa9Nat+Request sys-net keyword adminvm", "header"),
        (b"+Request sys-net keyword adminvm", "service"),
        (b"qubes/PortfwdNat+Request sys-net keyword adminvm", "service"),
        (b"qubes.PortfwdNat+Re:quest sys-net keyword adminvm", "argument"),
        (b"qubes.PortfwdNat+Request dom0 keyword adminvm", "source"),
        (b"qubes.PortfwdNat+Request 1sys-net keyword adminvm", "source"),
        (b"qubes.PortfwdNat+Request " + b"a" * 32 + b" keyword adminvm", "source"),
        (b"qubes.PortfwdNat+Request @adminvm keyword adminvm", "source"),
        (b"qubes.PortfwdNat+Request sys-net name work", "target"),
        (b"qubes.PortfwdNat+Request sys-net keyword dispvm", "target"),
        (b"qubes.PortfwdNat+Request sys-net uuid dom0", "target"),
    ],
)
def test_a_header_qrexec_would_not_send_is_refused_naming_the_field(
    header: bytes, field: str
) -> None:
    with pytest.raises(HeaderError) as refused:
        parse_header(header)
    message = str(refused.value)
    assert message.startswith(f"{field}: expected") and "\n" not in message


def test_split_waits_for_the_nul_and_keeps_what_follows() -> None:
    assert split_header(b"qubes.PortfwdNat+Request sys-net") is None
    assert split_header(b"head\0pay\0load") == (b"head", b"pay\0load")


def test_split_refuses_a_header_longer_than_its_bound() -> None:
    assert split_header(b"h" * MAX_HEADER + b"\0") == (b"h" * MAX_HEADER, b"")
    with pytest.raises(HeaderError, match="header: longer than"):
        split_header(b"h" * (MAX_HEADER + 1))


def test_replies_decode_with_the_clients_own_codec() -> None:
    assert parse_reply(encode_ok(b"result=removed count=1")) == b"result=removed count=1"
    with pytest.raises(QubesdError) as error:
        parse_reply(encode_error("QubesValueError", "port: 100% taken\nsecond line"))
    assert error.value.exc_type == "QubesValueError"
    assert error.value.message == "port: 100% taken second line"
