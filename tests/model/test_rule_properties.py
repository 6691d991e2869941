"""Properties: any valid rule survives its text form; forward ids ignore path and dress."""

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.model.rule import ForwardRule, Rule, forward_id
from qubes_portfwd.model.rule_text import format_rule, parse_rule, parse_rules
from strategies import comments, expiries, filter_rules, forward_rules, qube_names, rules, untimed


@untimed
@given(rules())
def test_any_rule_survives_its_text_form(rule: Rule) -> None:
    line = format_rule(rule)
    assert parse_rule(line) == rule
    assert format_rule(parse_rule(line)) == line


@untimed
@given(st.lists(rules(), max_size=8))
def test_any_rule_list_survives_a_set_payload(rule_list: list[Rule]) -> None:
    payload = "\n".join(format_rule(rule) for rule in rule_list) + "\n"
    assert parse_rules(payload) == rule_list


@untimed
@given(filter_rules())
def test_filter_rule_text_keeps_qubes_key_order(rule: Rule) -> None:
    keys = [option.partition("=")[0] for option in format_rule(rule).split(" comment=")[0].split()]
    qubes_order = ["action", "expire", "dst4", "dst6", "dsthost", "proto", "specialtarget"]
    qubes_order += ["dstports", "icmptype"]
    assert keys == sorted(keys, key=qubes_order.index)


@untimed
@given(
    forward_rules(),
    st.none() | st.lists(qube_names, min_size=1, max_size=3).map(tuple),
    st.none() | expiries(),
    st.none() | comments,
    qube_names,
)
def test_forward_id_ignores_via_expire_and_comment(
    rule: ForwardRule,
    via: tuple[str, ...] | None,
    expire: object,
    comment: str | None,
    target: str,
) -> None:
    changed = dataclasses.replace(rule, via=via, follow=False, expire=expire, comment=comment)
    assert forward_id(target, changed) == forward_id(target, rule)
    reparsed = parse_rule(format_rule(rule))
    assert isinstance(reparsed, ForwardRule)
    assert forward_id(target, reparsed) == forward_id(target, rule)


@untimed
@given(forward_rules(), forward_rules(), qube_names)
def test_forward_ids_differ_when_identities_differ(
    one: ForwardRule, other: ForwardRule, target: str
) -> None:
    same = one.identity_text() == other.identity_text()
    assert (forward_id(target, one) == forward_id(target, other)) == same
