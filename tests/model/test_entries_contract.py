"""Per-qube entries: what the planner writes reads back; anything malformed is refused."""

import ipaddress

import pytest
from hypothesis import given

from qubes_portfwd.model.entries import (
    DOWNSTREAM,
    AcceptHop,
    DnatHop,
    Hop,
    format_hop,
    hop_key,
    parse_hop,
)
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.ports import PortRange
from strategies import accept_hops, dnat_hops, untimed

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


@pytest.mark.parametrize(
    ("untrusted", "protos"),
    [
        ("tcp", ("tcp",)),
        ("udp", ("udp",)),
        ("tcp,udp", ("tcp", "udp")),
        ("udp,tcp", ("udp", "tcp")),
    ],
)
def test_each_protocol_set_reads_in_its_written_order(
    untrusted: str, protos: tuple[str, ...]
) -> None:
    hop = parse_hop(f"/qubes-portfwd/{FID}/4", DNAT.replace("proto=tcp", f"proto={untrusted}"))
    assert hop.protos == protos


@pytest.mark.parametrize("untrusted", ["udp,udp", "tcp,", ",tcp", "tcp,udp,tcp", "TCP"])
def test_any_other_protocol_list_is_refused(untrusted: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_hop(f"/qubes-portfwd/{FID}/4", DNAT.replace("proto=tcp", f"proto={untrusted}"))
    assert caught.value.field == "proto"
    assert caught.value.message == "expected tcp, udp or tcp,udp"


def test_hops_share_the_values_of_repeated_texts() -> None:
    first = parse_hop(f"/qubes-portfwd/{FID}/4", DNAT.replace("8080-8080", "80-80"))
    second = parse_hop("/qubes-portfwd/ba9876543210/4", DNAT.replace("8080-8080", "80-80"))
    assert isinstance(first, DnatHop) and isinstance(second, DnatHop)
    assert first.sources[0] is second.sources[0] and first.to is second.to
    assert first.toports is first.ports


@pytest.mark.parametrize(
    ("bad", "field"), [("srchost=10.1.1.1/8", "srchost"), ("to=10.137.0.300", "to")]
)
def test_a_refused_text_is_refused_again_when_repeated(bad: str, field: str) -> None:
    name = bad.partition("=")[0]
    value = " ".join(bad if part.startswith(f"{name}=") else part for part in DNAT.split(" "))
    for _ in range(2):
        with pytest.raises(ValidationError) as caught:
            parse_hop(f"/qubes-portfwd/{FID}/4", value)
        assert caught.value.field == field
