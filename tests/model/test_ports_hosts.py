"""Port ranges, destinations and forward sources: every accepted and refused form."""

import ipaddress

import pytest

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.hosts import is_qube_name, parse_cidr, parse_dsthost
from qubes_portfwd.model.ports import PortRange, parse_port_range


@pytest.mark.parametrize(
    ("text", "lowest", "expected"),
    [
        ("80", 1, PortRange(80, 80)),
        ("80-90", 1, PortRange(80, 90)),
        ("1-65535", 1, PortRange(1, 65535)),
        ("0", 0, PortRange(0, 0)),
        ("0-0", 0, PortRange(0, 0)),
        ("00443", 1, PortRange(443, 443)),
    ],
)
def test_port_ranges_accepted(text: str, lowest: int, expected: PortRange) -> None:
    assert parse_port_range("dstports", text, lowest=lowest) == expected


@pytest.mark.parametrize(
    ("text", "lowest", "says"),
    [
        ("0", 1, "out of range; expected 1-65535"),
        ("65536", 0, "out of range"),
        ("90-80", 1, "reversed; write 80-90"),
        ("80-", 1, "is not a port"),
        ("-80", 1, "is not a port"),
        ("1-2-3", 1, "is not a port"),
        ("http", 1, "is not a port"),
        ("", 1, "is not a port"),
        ("١٢", 1, "is not a port"),  # Arabic-Indic digits pass str.isdigit()
        ("999999", 1, "is not a port"),
    ],
)
def test_port_ranges_refused_name_the_field(text: str, lowest: int, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_port_range("srcports", text, lowest=lowest)
    assert caught.value.field == "srcports"
    assert says in caught.value.message


def test_port_range_forms() -> None:
    single, span = PortRange(443, 443), PortRange(80, 90)
    assert (single.text, single.short) == ("443-443", "443")
    assert (span.text, span.short, len(span)) == ("80-90", "80-90", 11)
    assert 85 in span and 91 not in span and "85" not in span
    assert span.overlaps(PortRange(90, 100)) and not span.overlaps(PortRange(91, 100))
    assert span.offset_to(PortRange(8080, 8090)) == 8000
    with pytest.raises(ValueError):
        PortRange(10, 9)


@pytest.mark.parametrize(
    ("text", "kept_as", "kind", "network"),
    [
        ("10.1.2.3", "10.1.2.3/32", "dst4", "10.1.2.3/32"),
        ("10.1.2.3/24", "10.1.2.3/24", "dst4", "10.1.2.0/24"),  # host bits kept, as Qubes does
        ("0.0.0.0/0", "0.0.0.0/0", "dst4", "0.0.0.0/0"),
        ("2001:db8::1", "2001:db8::1/128", "dst6", "2001:db8::1/128"),
        ("2001:db8::/32", "2001:db8::/32", "dst6", "2001:db8::/32"),
        ("qubes-os.org", "qubes-os.org", "dsthost", None),
        ("my_host.local", "my_host.local", "dsthost", None),
    ],
)
def test_dsthost_accepted(text: str, kept_as: str, kind: str, network: str | None) -> None:
    host = parse_dsthost("dsthost", text)
    assert (host.text, host.type) == (kept_as, kind)
    assert host.network == (None if network is None else ipaddress.ip_network(network))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10.0.0.1/33", "over 32 for IPv4"),
        ("::1/129", "over 128 for IPv6"),
        ("10.0.0.1/8/8", "more than one '/'"),
        ("10.0.0.1/x", "not a number"),
        ("10.0.0.1/", "not a number"),
        ("example.com/24", "not an IPv4 or IPv6 address"),
        ("Example.com", "lowercase DNS name"),
        ("a" * 254, "lowercase DNS name"),
        ("", "lowercase DNS name"),
    ],
)
def test_dsthost_refused(text: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_dsthost("dst4", text)
    assert caught.value.field == "dst4"
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("::/0", "::/0"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("2001:db8::5", "2001:db8::5/128"),
    ],
)
def test_cidr_accepted(text: str, expected: str) -> None:
    assert parse_cidr("srchost", text) == ipaddress.ip_network(expected)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("192.0.2.7/24", "host bits set; write 192.0.2.0/24"),
        ("192.0.2.0/33", "over 32"),
        ("work", "not an address or network"),
        ("", "not an address or network"),
    ],
)
def test_cidr_refused(text: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_cidr("srchost", text)
    assert caught.value.field == "srchost"
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("work", True),
        ("sys-firewall", True),
        ("a", True),
        ("Work_2.x", True),
        ("a" * 31, True),
        ("a" * 32, False),
        ("", False),
        ("1work", False),
        ("-work", False),
        ("wörk", False),
        ("éwork", False),
        ("work space", False),
        ("work/1", False),
    ],
)
def test_qube_names(name: str, valid: bool) -> None:
    assert is_qube_name(name) is valid
