"""The outbound rule dialog's checks (pure): each wrong field named with the allowed form."""

import pytest

from qubes_portfwd.gui.outbound_form import (
    ADDRESS,
    COMMENT,
    PORTS,
    OutboundForm,
    address_text,
    check_outbound,
    form_of_outbound,
    outbound_cells,
)
from qubes_portfwd.model.rule_text import format_rule


@pytest.mark.parametrize(
    ("form", "line"),
    [
        (
            OutboundForm("www.example.com", "tcp", "443"),
            "action=accept dsthost=www.example.com proto=tcp dstports=443-443",
        ),
        (OutboundForm("192.168.1.100"), "action=accept dst4=192.168.1.100/32"),
        (
            OutboundForm("192.168.0.0/16", "udp", "1024-1234", "lan"),
            "action=accept dst4=192.168.0.0/16 proto=udp dstports=1024-1234 comment=lan",
        ),
        (OutboundForm("2001:db8::1"), "action=accept dst6=2001:db8::1/128"),
        (OutboundForm("*", "tcp", "22"), "action=accept proto=tcp dstports=22-22"),
        (OutboundForm(" example.org ", "udp"), "action=accept dsthost=example.org proto=udp"),
    ],
)
def test_a_valid_form_is_one_accept_rule(form: OutboundForm, line: str) -> None:
    check = check_outbound(form)
    assert check.errors == {} and check.rule is not None
    assert format_rule(check.rule) == line
    assert check_outbound(form_of_outbound(check.rule)).rule == check.rule


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        (OutboundForm(""), ADDRESS, "required: an IPv4/IPv6 address, a network A/N"),
        (
            OutboundForm("Example.com"),
            ADDRESS,
            "'Example.com' is not an address, a network A/N or a lowercase DNS name; expected",
        ),
        (OutboundForm("10.0.0.0/33"), ADDRESS, "prefix length 33 is over 32 for IPv4; expected"),
        (OutboundForm("example.com", "any", "80"), PORTS, "ports need the protocol tcp or udp"),
        (
            OutboundForm("example.com", "tcp", "99999"),
            PORTS,
            "port 99999 is out of range; expected 0-65535",
        ),
        (OutboundForm("example.com", "tcp", "90-80"), PORTS, "range 90-80 is reversed"),
        (OutboundForm("example.com", "tcp", "http"), PORTS, "'http' is not"),
        (OutboundForm("example.com", "tcp", "80", "a=b"), COMMENT, "use letters, digits"),
        (OutboundForm("*"), ADDRESS, "* with any protocol allows everything"),
    ],
)
def test_a_wrong_field_is_named_with_the_allowed_form(
    form: OutboundForm, field: str, message: str
) -> None:
    check = check_outbound(form)
    assert check.rule is None
    assert check.errors[field].startswith(message), check.errors


def test_every_wrong_field_says_so_at_once() -> None:
    check = check_outbound(OutboundForm("Bad Name", "tcp", "0-99999", "x=y"))
    assert set(check.errors) == {ADDRESS, PORTS, COMMENT}


def test_cells_show_a_host_without_its_full_prefix() -> None:
    rule = check_outbound(OutboundForm("192.168.1.100", "tcp", "80", "web")).rule
    assert rule is not None
    assert outbound_cells(rule) == ("192.168.1.100", "tcp", "80", "web")
    net = check_outbound(OutboundForm("fd00::/8")).rule
    assert net is not None and address_text(net) == "fd00::/8"
    assert outbound_cells(net) == ("fd00::/8", "any", "any", "")
