"""Qubes' accept/drop rules in Admin API text: Qubes' lines read back byte-identical."""

import pytest

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.hosts import parse_dsthost
from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.model.rule import Action, ExpireAt, FilterRule
from qubes_portfwd.model.rule_text import (
    MAX_RULE_LENGTH,
    format_qdb_rule,
    format_rule,
    parse_rule,
    parse_rules,
)

# Lines as `admin.vm.firewall.Get` answers them: Qubes' key order, dstports as A-B.
QUBES_LINES = [
    "action=accept",
    "action=drop",
    "action=accept dst4=10.1.2.3/24 proto=tcp dstports=443-443",
    "action=accept expire=1700000000 dsthost=qubes-os.org",
    "action=drop dst6=2001:db8::/32 proto=udp dstports=53-53 comment=no DNS: see [1]; ok, done.",
    "action=accept proto=icmp icmptype=8",
    "action=accept specialtarget=dns",
    "action=accept dst4=0.0.0.0/0 proto=tcp specialtarget=dns dstports=0-65535",
    "action=accept expire=0 dsthost=example.com proto=tcp dstports=80-90 comment=web",
    "action=accept comment=two  spaces and a trailing one ",
    "action=drop dst4=192.168.1.5/32 proto=udp",
]


@pytest.mark.parametrize("line", QUBES_LINES)
def test_qubes_lines_read_back_byte_identical(line: str) -> None:
    assert format_rule(parse_rule(line)) == line


def test_fields_of_a_full_rule() -> None:
    rule = parse_rule(
        "action=drop expire=1700000000 dst4=10.1.2.3/24 proto=tcp dstports=443-443 comment=a b"
    )
    assert rule == FilterRule(
        action=Action.DROP,
        proto="tcp",
        dsthost=parse_dsthost("dsthost", "10.1.2.3/24"),
        dstports=PortRange(443, 443),
        expire=ExpireAt(1700000000),
        comment="a b",
    )


@pytest.mark.parametrize(
    ("written", "as_qubes_sends_it"),
    [
        ("action=accept dsthost=10.1.2.3", "action=accept dst4=10.1.2.3/32"),
        ("action=accept dsthost=2001:db8::1", "action=accept dst6=2001:db8::1/128"),
        ("action=accept dstname=qubes-os.org", "action=accept dsthost=qubes-os.org"),
        ("action=accept dst4=10.0.0.0/8", "action=accept dst4=10.0.0.0/8"),
        ("proto=tcp dstports=443 action=accept", "action=accept proto=tcp dstports=443-443"),
        ("  action=accept   proto=udp ", "action=accept proto=udp"),
        ("action=accept comment=", "action=accept"),  # Qubes ignores an empty comment
    ],
)
def test_other_spellings_come_back_in_qubes_form(written: str, as_qubes_sends_it: str) -> None:
    assert format_rule(parse_rule(written)) == as_qubes_sends_it


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ("", "action", "required"),
        ("proto=tcp", "action", "required"),
        ("action=allow", "action", "expected accept, drop or forward"),
        ("comment=hello", "action", "required"),
        ("comment=x action=accept", "comment", "letters, digits"),  # all after comment= is it
        ("action=accept comment=x expire=5", "comment", "letters, digits"),
        ("action=accept proto=sctp", "proto", "expected tcp, udp or icmp"),
        ("action=accept proto=tcp dstports=65536", "dstports", "out of range"),
        ("action=accept proto=tcp dstports=90-80", "dstports", "reversed"),
        ("action=accept proto=tcp dstports=80-", "dstports", "is not a port"),
        ("action=accept dstports=80", "dstports", "only with proto=tcp or proto=udp"),
        ("action=accept proto=icmp dstports=80", "dstports", "only with proto=tcp"),
        ("action=accept proto=icmp icmptype=256", "icmptype", "expected a number 0-255"),
        ("action=accept proto=icmp icmptype=echo", "icmptype", "is not a number 0-255"),
        ("action=accept proto=tcp icmptype=8", "icmptype", "only with proto=icmp"),
        ("action=accept icmptype=8", "icmptype", "only with proto=icmp"),
        ("action=accept specialtarget=ntp", "specialtarget", "expected dns"),
        ("action=accept expire=soon", "expire", "a UNIX time in seconds"),
        ("action=accept expire=-1", "expire", "a UNIX time in seconds"),
        ("action=accept expire=99999999999999", "expire", "a UNIX time"),
        ("action=accept dst4=2001:db8::1", "dst4", "expected an IPv4 address"),
        ("action=accept dst4=qubes-os.org", "dst4", "expected an IPv4 address"),
        ("action=accept dst6=10.0.0.1", "dst6", "expected an IPv6 address"),
        ("action=accept dst4=10.0.0.1/33", "dst4", "over 32"),
        ("action=accept dst6=::1/129", "dst6", "over 128"),
        ("action=accept dsthost=10.0.0.1/8/8", "dsthost", "more than one '/'"),
        ("action=accept dsthost=Qubes-OS.org", "dsthost", "lowercase DNS name"),
        ("action=accept dsthost=qubes-os.org/24", "dsthost", "not an IPv4 or IPv6 address"),
        ("action=accept dsthost=a dst4=1.2.3.4", "dst4", "given twice"),
        ("action=accept proto=tcp proto=udp", "proto", "given twice"),
        ("action=accept action=drop", "action", "given twice"),
        ("action=accept colour=red", "colour", "unknown option"),
        ("action=accept proto", "rule", "not in the form key=value"),
        ("action=accept proto=", "proto", "empty or bad value"),
        ("action=accept dsthost=a$b", "dsthost", "letters, digits and :;,./-_[] only"),
        ("action=accept dsthost=a\tb", "dsthost", "letters, digits"),
        ("action=accept comment=tab\there", "comment", "letters, digits"),
        ("action=accept comment=naïve", "comment", "letters, digits"),
        ("action=accept comment=a=b", "comment", "letters, digits"),
        ("action=accept srcports=80", "srcports", "only for action=forward"),
        ("action=accept srchost=0.0.0.0/0", "srchost", "only for action=forward"),
        ("action=drop forwardtype=external", "forwardtype", "only for action=forward"),
        ("action=accept via=sys-net", "via", "only for action=forward"),
        ("action=accept follow=yes", "follow", "only for action=forward"),
        ("action=accept comment=" + "x" * MAX_RULE_LENGTH, "rule", "longer than"),
    ],
)
def test_refused_with_the_field_and_allowed_form(line: str, field: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rule(line)
    assert caught.value.field == field
    assert says in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_unknown_key_with_unprintable_name_is_not_echoed() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rule("action=accept \x1b[2J=1")
    assert caught.value.field == "rule" and "\x1b" not in str(caught.value)


def test_an_option_without_a_name_is_named_as_the_rule() -> None:
    # Found by fuzzing: `=dns` gave an error whose field was empty.
    with pytest.raises(ValidationError) as caught:
        parse_rule("action=accept =dns")
    assert caught.value.field == "rule" and "without a known name" in caught.value.message


def test_a_request_is_all_or_nothing_and_errors_carry_the_line() -> None:
    text = "action=accept proto=tcp dstports=22\n\naction=drop proto=udp dstports=0-99999\n"
    with pytest.raises(ValidationError) as caught:
        parse_rules(text)
    assert caught.value.field == "dstports"
    assert caught.value.line_no == 3  # type: ignore[attr-defined]
    assert "(line 3)" in str(caught.value)
    assert parse_rules("action=accept\n\n  \naction=drop\n") == [
        FilterRule(Action.ACCEPT),
        FilterRule(Action.DROP),
    ]


def test_qubesdb_form_leaves_out_expire_and_comment() -> None:
    rule = parse_rule("action=accept expire=1700000000 dst4=10.0.0.0/8 proto=tcp comment=x y")
    assert format_qdb_rule(rule) == "action=accept dst4=10.0.0.0/8 proto=tcp"


def test_expiry_compares_with_now() -> None:
    expire = ExpireAt(1000)
    assert expire.expired(1000.0, "boot") and expire.expired(1000.5, "boot")
    assert not expire.expired(999.9, "boot")


@pytest.mark.parametrize(
    "line",
    [
        "action=accept proto=icmp icmptype=0",
        "action=accept proto=icmp icmptype=255",
        "action=accept proto=udp dstports=0-0",
        "action=accept proto=tcp dstports=65535-65535",
        "action=accept expire=0",
        "action=accept expire=1099511627776",
        "action=accept dst4=0.0.0.0/0",
        "action=accept dst6=::/0",
        "action=accept dst6=::1/128",
    ],
)
def test_boundary_values_accepted(line: str) -> None:
    assert format_rule(parse_rule(line)) == line
