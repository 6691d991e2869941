"""`action=forward` rules: fields, defaults, canonical text and every refusal."""

import ipaddress

import pytest

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.model.rule import (
    ExpireAt,
    ForwardRule,
    ForwardType,
    UntilReboot,
    forward_id,
    is_wildcard,
)
from qubes_portfwd.model.rule_text import format_rule, parse_rule

CANONICAL_LINES = [
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=0.0.0.0/0",
    "action=forward forwardtype=external srcports=5000-5010 dstports=6000-6010 "
    "srchost=192.0.2.0/24,198.51.100.7/32 via=sys-firewall,sys-net expire=1700000000 "
    "comment=game server",
    "action=forward forwardtype=external proto=udp srcports=51820-51820 dstports=51820-51820 "
    "srchost=::/0 follow=yes expire=boot:6c1f9a0e-6f43-4a4e-9b3c-12ab34cd56ef",
    "action=forward forwardtype=internal proto=tcp srcports=22-22 dstports=22-22 "
    "srchost=work,personal via=sys-firewall expire=boot",
]


@pytest.mark.parametrize("line", CANONICAL_LINES)
def test_canonical_lines_read_back_byte_identical(line: str) -> None:
    rule = parse_rule(line)
    assert isinstance(rule, ForwardRule)
    assert format_rule(rule) == line


def test_the_qvm_firewall_example() -> None:
    rule = parse_rule(
        "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=0.0.0.0/0"
    )
    assert rule == ForwardRule(
        forwardtype=ForwardType.EXTERNAL,
        srcports=PortRange(80, 80),
        dstports=PortRange(8080, 8080),
        srchost=(ipaddress.IPv4Network("0.0.0.0/0"),),
        proto="tcp",
    )
    assert isinstance(rule, ForwardRule)
    assert rule.protos == ("tcp",) and rule.families == (4,)
    assert is_wildcard(rule.source_networks[0])


def test_defaults_dstports_both_protocols_and_bare_addresses() -> None:
    rule = parse_rule("action=forward forwardtype=external srcports=7000-7002 srchost=2001:db8::7")
    assert isinstance(rule, ForwardRule)
    assert rule.dstports == rule.srcports == PortRange(7000, 7002)
    assert rule.protos == ("tcp", "udp")
    assert rule.srchost == (ipaddress.IPv6Network("2001:db8::7/128"),)
    assert rule.families == (6,)
    assert rule.via is None and rule.follow is False and rule.expire is None


def test_internal_forward_names_qubes_and_plans_both_families() -> None:
    rule = parse_rule("action=forward forwardtype=internal srcports=22 srchost=work,dev.box")
    assert isinstance(rule, ForwardRule)
    assert rule.source_qubes == ("work", "dev.box") and rule.source_networks == ()
    assert rule.families == (4, 6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("boot", UntilReboot(None)),
        ("boot:0123abcd-ef", UntilReboot("0123abcd-ef")),
        ("1700000000", ExpireAt(1700000000)),
    ],
)
def test_forward_expiry_forms(text: str, expected: object) -> None:
    rule = parse_rule(f"action=forward forwardtype=external srcports=1 srchost=::/0 expire={text}")
    assert isinstance(rule, ForwardRule)
    assert rule.expire == expected


def test_until_reboot_ends_with_another_boot() -> None:
    assert not UntilReboot("abc").expired(1e12, "abc")
    assert UntilReboot("abc").expired(0.0, "def")
    assert UntilReboot(None).expired(0.0, "abc")  # never bound: never in force


EXTERNAL = "action=forward forwardtype=external srcports=80 "


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ("action=forward srcports=80 srchost=::/0", "forwardtype", "required"),
        (
            "action=forward forwardtype=sideways srcports=80 srchost=::/0",
            "forwardtype",
            "expected external or internal",
        ),
        (EXTERNAL + "srchost=::/0 proto=icmp", "proto", "a forward takes tcp or udp"),
        ("action=forward forwardtype=external srchost=::/0", "srcports", "required"),
        (EXTERNAL.replace("80", "0") + "srchost=::/0", "srcports", "expected 1-65535"),
        (EXTERNAL.replace("80", "65536") + "srchost=::/0", "srcports", "out of range"),
        (EXTERNAL.replace("80", "9-8") + "srchost=::/0", "srcports", "reversed"),
        (EXTERNAL + "dstports=0 srchost=::/0", "dstports", "expected 1-65535"),
        (
            EXTERNAL + "dstports=8080-8081 srchost=::/0",
            "dstports",
            "ranges must have the same length",
        ),
        (EXTERNAL.strip(), "srchost", "write 0.0.0.0/0 or ::/0 to allow everyone"),
        ("action=forward forwardtype=internal srcports=80", "srchost", "the qubes that may"),
        (EXTERNAL + "srchost=work", "srchost", "qube names are for internal forwards"),
        (
            "action=forward forwardtype=internal srcports=80 srchost=10.0.0.0/8",
            "srchost",
            "addresses are for external forwards",
        ),
        (
            "action=forward forwardtype=internal srcports=80 srchost=work,1x",
            "srchost",
            "'1x' is not a qube name",
        ),
        (EXTERNAL + "srchost=10.0.0.0/8,::/0", "srchost", "mixes IPv4 and IPv6"),
        (EXTERNAL + "srchost=10.1.2.3/8", "srchost", "host bits set; write 10.0.0.0/8"),
        (EXTERNAL + "srchost=10.0.0.0/33", "srchost", "over 32"),
        (EXTERNAL + "srchost=10.0.0.0/8,10.0.0.0/8", "srchost", "the same source twice"),
        ("action=forward forwardtype=internal srcports=80 srchost=a,a", "srchost", "twice"),
        (EXTERNAL + "srchost=::/0,", "srchost", "not an address or network"),
        (EXTERNAL + "srchost=::/0 dsthost=10.0.0.1", "dsthost", "the destination is the qube"),
        (EXTERNAL + "srchost=::/0 dst4=10.0.0.1", "dst4", "not allowed on action=forward"),
        (EXTERNAL + "srchost=::/0 dst6=::1", "dst6", "not allowed on action=forward"),
        (EXTERNAL + "srchost=::/0 icmptype=8", "icmptype", "not allowed on action=forward"),
        (EXTERNAL + "srchost=::/0 specialtarget=dns", "specialtarget", "not allowed"),
        (EXTERNAL + "srchost=::/0 via=1net", "via", "expected NETVM,..."),
        (EXTERNAL + "srchost=::/0 via=sys-net,,x", "via", "is not a qube name"),
        (EXTERNAL + "srchost=::/0 follow=no", "follow", "expected yes"),
        (EXTERNAL + "srchost=::/0 via=sys-net follow=yes", "follow", "either follows"),
        (EXTERNAL + "srchost=::/0 expire=boot:", "expire", "boot:ID"),
        (EXTERNAL + "srchost=::/0 expire=boot:xyz", "expire", "hex and -"),
        (EXTERNAL + "srchost=::/0 expire=later", "expire", "a UNIX time"),
        (EXTERNAL + "srchost=::/0 srcports=81", "srcports", "given twice"),
    ],
)
def test_refused_with_the_field_and_allowed_form(line: str, field: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rule(line)
    assert caught.value.field == field
    assert says in caught.value.message


def _forward(line: str) -> ForwardRule:
    rule = parse_rule(line)
    assert isinstance(rule, ForwardRule)
    return rule


def test_forward_id_is_twelve_hex_and_stable() -> None:
    rule = _forward(CANONICAL_LINES[0])
    assert forward_id("work", rule) == forward_id("work", _forward(CANONICAL_LINES[0]))
    assert len(forward_id("work", rule)) == 12
    assert set(forward_id("work", rule)) <= set("0123456789abcdef")


def test_forward_id_ignores_path_expiry_and_comment() -> None:
    base = _forward(EXTERNAL + "srchost=::/0")
    dressed = _forward(EXTERNAL + "srchost=::/0 via=sys-vpn expire=boot:ab comment=hi there")
    following = _forward(EXTERNAL + "srchost=::/0 follow=yes expire=1700000000")
    assert forward_id("work", base) == forward_id("work", dressed) == forward_id("work", following)


@pytest.mark.parametrize(
    "other",
    [
        EXTERNAL + "srchost=::/0 proto=tcp",
        EXTERNAL + "srchost=::/0 dstports=81",
        EXTERNAL.replace("80", "81") + "srchost=::/0",
        EXTERNAL + "srchost=2001:db8::/32",
        "action=forward forwardtype=internal srcports=80 srchost=work",
    ],
)
def test_forward_id_tells_different_forwards_apart(other: str) -> None:
    base = _forward(EXTERNAL + "srchost=::/0")
    assert forward_id("work", base) != forward_id("work", _forward(other))
    assert forward_id("work", base) != forward_id("personal", base)


def test_forwards_written_alike_share_their_paths_sources_and_ports() -> None:
    # 10,000 forwards through the same path from the same network: one value each, not
    # 10,000 copies (the admin service holds them all).
    line = (
        "action=forward forwardtype=external proto=tcp srcports={port} dstports={port} "
        "srchost=192.168.1.0/24 via=sys-firewall,sys-net"
    )
    first, second = (parse_rule(line.format(port=port)) for port in (1000, 1001))
    assert isinstance(first, ForwardRule) and isinstance(second, ForwardRule)
    assert first.via is second.via
    assert first.srchost[0] is second.srchost[0]
    assert first.srcports is first.dstports
    assert second.srcports != first.srcports
