"""Writing firewall.xml: Qubes' exact bytes, expired rules dropped, unstorable rules refused."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_lab.qubesd.firewall_xml import firewall_xml_bytes, parse_firewall_xml
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.hosts import DstHost
from qubes_portfwd.model.rule import Action, ExpireAt, FilterRule, Rule, UntilReboot
from qubes_portfwd.model.rule_text import parse_rule, parse_rules
from strategies import boot_ids, rules, untimed

from .test_firewall_xml_read import QUBES_V2, QUBES_V2_RULES

BOOT = "6c1f9a0e-6f43-4a4e-9b3c-12ab34cd56ef"
NOW = 1_600_000_000.0


def test_qubes_file_resaves_byte_identical() -> None:
    assert firewall_xml_bytes(parse_firewall_xml(QUBES_V2), NOW, BOOT) == QUBES_V2


def test_empty_list_as_lxml_writes_it() -> None:
    assert firewall_xml_bytes([], NOW, BOOT) == b'<firewall version="2">\n  <rules/>\n</firewall>\n'


def test_forward_properties_in_api_order_ports_short() -> None:
    forward = parse_rule(
        "action=forward forwardtype=internal proto=udp srcports=5353 dstports=53 "
        "srchost=work,dev follow=yes expire=boot:" + BOOT + " comment=dns for dev"
    )
    assert firewall_xml_bytes([forward], NOW, BOOT).decode().splitlines()[4:14] == [
        '        <property name="action">forward</property>',
        '        <property name="forwardtype">internal</property>',
        '        <property name="proto">udp</property>',
        '        <property name="srcports">5353</property>',
        '        <property name="dstports">53</property>',
        '        <property name="srchost">work,dev</property>',
        '        <property name="follow">yes</property>',
        f'        <property name="expire">boot:{BOOT}</property>',
        '        <property name="comment">dns for dev</property>',
        "      </properties>",
    ]


def test_expired_rules_are_dropped_on_save() -> None:
    rule_list = parse_rules(
        f"""action=accept expire={int(NOW)} proto=tcp comment=ends now
action=accept expire={int(NOW) + 1} proto=udp comment=still on
action=forward forwardtype=external srcports=80 srchost=::/0 expire=boot:{BOOT} comment=this boot
action=forward forwardtype=external srcports=81 srchost=::/0 expire=boot:01d-b007 comment=gone
action=forward forwardtype=external srcports=82 srchost=::/0 expire=1 comment=long gone
action=drop"""
    )
    kept = parse_firewall_xml(firewall_xml_bytes(rule_list, NOW, BOOT))
    assert [rule.comment for rule in kept] == ["still on", "this boot", None]


def test_unbound_boot_expiry_is_refused_not_dropped() -> None:
    forward = parse_rule("action=forward forwardtype=external srcports=80 srchost=::/0 expire=boot")
    with pytest.raises(ValidationError) as caught:
        firewall_xml_bytes([forward], NOW, BOOT)
    assert caught.value.field == "expire" and "boot:ID" in caught.value.message


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        # A bare address kept without its prefix would come back as 10.0.0.1/32.
        (FilterRule(Action.ACCEPT, dsthost=DstHost("10.0.0.1")), "rule"),
        (FilterRule(Action.ACCEPT, comment="<script>"), "comment"),
        (FilterRule(Action.ACCEPT, comment=""), "rule"),  # reads back as no comment
        (FilterRule(Action.ACCEPT, proto="tcp", icmptype=3), "icmptype"),
        (FilterRule(Action.FORWARD), "forwardtype"),
    ],
)
def test_rules_that_would_not_read_back_are_refused(rule: FilterRule, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        firewall_xml_bytes([FilterRule(Action.DROP), rule], NOW, BOOT)
    assert caught.value.field == field
    assert "rule 2" in caught.value.message


@untimed
@given(st.lists(rules(bound=True), max_size=6), st.integers(0, 2**40), boot_ids)
def test_any_rule_list_survives_xml(rule_list: list[Rule], now: int, boot_id: str) -> None:
    unexpired = [
        rule for rule in rule_list if rule.expire is None or not rule.expire.expired(now, boot_id)
    ]
    data = firewall_xml_bytes(rule_list, now, boot_id)
    assert parse_firewall_xml(data) == unexpired
    assert firewall_xml_bytes(unexpired, now, boot_id) == data


@untimed
@given(rules(bound=True))
def test_any_rule_survives_xml_unchanged(rule: Rule) -> None:
    unexpiring = dataclasses.replace(rule, expire=None)
    assert parse_firewall_xml(firewall_xml_bytes([unexpiring], NOW, BOOT)) == [unexpiring]


def test_expiry_values_as_written() -> None:
    rule_list = [
        FilterRule(Action.ACCEPT, expire=ExpireAt(2_000_000_000)),
        dataclasses.replace(
            parse_rule("action=forward forwardtype=external srcports=1 srchost=::/0"),
            expire=UntilReboot(BOOT),
        ),
    ]
    assert parse_firewall_xml(firewall_xml_bytes(rule_list, NOW, BOOT)) == rule_list
    assert QUBES_V2_RULES  # the fixture the byte-identical test relies on is not empty


def test_refusal_counts_rules_as_the_caller_listed_them() -> None:
    expired = FilterRule(Action.ACCEPT, expire=ExpireAt(1))
    bad = FilterRule(Action.ACCEPT, comment="a\nb")
    with pytest.raises(ValidationError) as caught:
        firewall_xml_bytes([expired, FilterRule(Action.DROP), bad], NOW, BOOT)
    assert caught.value.field == "comment" and "(rule 3 to save)" in caught.value.message
