"""Per-qube entries: what the planner writes reads back; anything malformed is refused."""

import ipaddress

import pytest
from hypothesis import given

from qubes_portfwd.model.entries import (
    DOWNSTREAM,
    FIREWALL_PREFIX,
    AcceptHop,
    DnatHop,
    FirewallEntry,
    Hop,
    format_firewall,
    format_hop,
    hop_key,
    parse_firewall,
    parse_hop,
)
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.model.rule import Action, FilterRule
from qubes_portfwd.model.rule_text import parse_rule
from strategies import accept_hops, dnat_hops, firewall_entries, untimed

FID = "0123456789ab"
DNAT = (
    "role=dnat family=4 proto=tcp in=eth0 ports=80-80 to=10.137.0.2 toports=8080-8080 "
    "srchost=0.0.0.0/0"
)
ACCEPT = "role=accept family=6 proto=tcp,udp ports=22-23 srchost=fd09:24ef:4179::/48,2001:db8::/32"


def test_documented_forms() -> None:
    dnat = parse_hop(f"/qubes-portfwd/{FID}/4", DNAT)
    assert dnat == DnatHop(
        FID,
        4,
        ("tcp",),
        "eth0",
        PortRange(80, 80),
        ipaddress.IPv4Address("10.137.0.2"),
        PortRange(8080, 8080),
        (ipaddress.IPv4Network("0.0.0.0/0"),),
    )
    assert format_hop(dnat) == DNAT and hop_key(dnat) == f"/qubes-portfwd/{FID}/4"
    accept = parse_hop(f"/qubes-portfwd/{FID}/6", ACCEPT)
    assert isinstance(accept, AcceptHop)
    assert accept.protos == ("tcp", "udp") and accept.ports == PortRange(22, 23)
    assert format_hop(accept) == ACCEPT
    internal = parse_hop(f"/qubes-portfwd/{FID}/4", DNAT.replace("in=eth0", f"in={DOWNSTREAM}"))
    assert isinstance(internal, DnatHop) and internal.inbound == DOWNSTREAM


@untimed
@given(dnat_hops() | accept_hops())
def test_any_hop_reads_back(hop: Hop) -> None:
    assert parse_hop(hop_key(hop), format_hop(hop)) == hop


def _relative(entry: FirewallEntry) -> dict[str, str]:
    base = f"{FIREWALL_PREFIX}{entry.address}/"
    values = format_firewall(entry)
    assert all(key.startswith(base) for key in values)
    return {key[len(base) :]: value for key, value in values.items()}


@untimed
@given(firewall_entries())
def test_any_firewall_entry_reads_back(entry: FirewallEntry) -> None:
    assert parse_firewall(str(entry.address), _relative(entry)) == entry


def test_firewall_entry_in_qubes_qubesdb_form() -> None:
    entry = FirewallEntry(
        ipaddress.IPv4Address("10.137.0.5"),
        "drop",
        (
            parse_rule("action=accept dst4=10.0.0.0/8 proto=tcp dstports=443-443"),  # type: ignore[arg-type]
            FilterRule(Action.ACCEPT, specialtarget="dns"),
        ),
    )
    assert format_firewall(entry) == {
        "/qubes-firewall/10.137.0.5/policy": "drop",
        "/qubes-firewall/10.137.0.5/0000": (
            "action=accept dst4=10.0.0.0/8 proto=tcp dstports=443-443"
        ),
        "/qubes-firewall/10.137.0.5/0001": "action=accept specialtarget=dns",
    }


@pytest.mark.parametrize(
    ("key", "value", "field", "says"),
    [
        (f"/qubes-portfwd/{FID}/5", DNAT, "key", "does not end in /4 or /6"),
        (f"/qubes-portfwd/{FID}", DNAT, "key", "does not end in /4 or /6"),
        ("/qubes-portfwd/0123456789AB/4", DNAT, "key", "<12 hex>"),
        ("/qubes-portfwd/0123/4", DNAT, "key", "<12 hex>"),
        (f"/qubes-firewall/{FID}/4", DNAT, "key", "is not /qubes-portfwd/"),
        (f"/qubes-portfwd/{FID}/6", DNAT, "family", "must be 6, as the key says"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("family=4 ", ""), "family", "must be 4"),
        (f"/qubes-portfwd/{FID}/4", DNAT + " colour=red", "colour", "unknown option"),
        (f"/qubes-portfwd/{FID}/4", DNAT + " comment=hi", "entry", "comments have no place"),
        (f"/qubes-portfwd/{FID}/4", DNAT + " ports=81-81", "ports", "given twice"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("role=dnat", "role=snat"), "role", "expected"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("proto=tcp", "proto=icmp"), "proto", "tcp,udp"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("proto=tcp", "proto=tcp,tcp"), "proto", "tcp"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("proto=tcp ", ""), "proto", "expected tcp"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("in=eth0", "in=a;b"), "in", "interface name"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("in=eth0", "in=" + "e" * 16), "in", "interface"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("in=eth0 ", ""), "in", "interface name"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("to=10.137.0.2", "to=work"), "to", "address"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("to=10.137.0.2", "to=fd00::2"), "to", "IPv4"),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("to=10.137.0.2 ", ""), "to", "address"),
        (
            f"/qubes-portfwd/{FID}/4",
            DNAT.replace("toports=8080-8080", "toports=8080-8081"),
            "toports",
            "as many ports as ports",
        ),
        (
            f"/qubes-portfwd/{FID}/4",
            DNAT.replace("toports=8080-8080", "toports=0"),
            "toports",
            "out of range",
        ),
        (
            f"/qubes-portfwd/{FID}/4",
            DNAT.replace("ports=80-80", "ports=90-80"),
            "ports",
            "reversed",
        ),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("0.0.0.0/0", "::/0"), "srchost", "IPv4"),
        (
            f"/qubes-portfwd/{FID}/4",
            DNAT.replace("0.0.0.0/0", "10.1.1.1/8"),
            "srchost",
            "host bits",
        ),
        (f"/qubes-portfwd/{FID}/4", DNAT.replace("0.0.0.0/0", "work"), "srchost", "address"),
        (
            f"/qubes-portfwd/{FID}/6",
            ACCEPT.replace("2001:db8::/32", "10.0.0.0/8"),
            "srchost",
            "IPv6",
        ),
        (f"/qubes-portfwd/{FID}/6", ACCEPT.replace("ports=22-23 ", ""), "ports", "is not a port"),
    ],
)
def test_malformed_hops_refused(key: str, value: str, field: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_hop(key, value)
    assert caught.value.field == field
    assert says in caught.value.message


GOOD_FIREWALL = {"policy": "drop", "0000": "action=accept proto=tcp dstports=443-443"}


@pytest.mark.parametrize(
    ("address", "values", "field", "says"),
    [
        ("work", GOOD_FIREWALL, "key", "is not an address"),
        ("10.137.0.5", {**GOOD_FIREWALL, "policy": "reject"}, "policy", "accept or drop"),
        ("10.137.0.5", {"0000": "action=accept"}, "policy", "accept or drop"),
        ("10.137.0.5", {**GOOD_FIREWALL, "0002": "action=drop"}, "key", "expected 0001"),
        ("10.137.0.5", {**GOOD_FIREWALL, "0000": "action=accept expire=5"}, "0000", "QubesDB form"),
        ("10.137.0.5", {**GOOD_FIREWALL, "0000": "action=accept comment=x"}, "0000", "QubesDB"),
        (
            "10.137.0.5",
            {
                **GOOD_FIREWALL,
                "0000": "action=forward forwardtype=external srcports=1 srchost=::/0",
            },
            "0000",
            "accept/drop rule",
        ),
        ("10.137.0.5", {**GOOD_FIREWALL, "0000": "action=accept proto=gre"}, "proto", "expected"),
    ],
)
def test_malformed_firewall_entries_refused(
    address: str, values: dict[str, str], field: str, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_firewall(address, values)
    assert caught.value.field == field
    assert says in caught.value.message
