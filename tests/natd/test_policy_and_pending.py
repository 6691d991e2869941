"""dom0's NAT policy (pure decision, text form, feature value) and the pending table."""

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.controller.nat_mapping import candidate_ports, clean_description
from qubes_portfwd.controller.nat_policy import (
    DEFAULT_DECISION,
    NatAction,
    PolicyLine,
    decide,
    format_policy,
    parse_policy,
    parse_policy_feature,
    policy_of,
    policy_value,
)
from qubes_portfwd.controller.pending import PendingFull, PendingTable
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.ports import PortRange

lines_strategy = st.lists(
    st.builds(
        lambda a, b, action, life: PolicyLine(PortRange(min(a, b), max(a, b)), action, life),
        st.integers(1, 65535),
        st.integers(1, 65535),
        st.sampled_from(list(NatAction)),
        st.integers(1, 604800),
    ),
    max_size=6,
)


@given(lines_strategy)
def test_policy_text_round_trip(lines: list[PolicyLine]) -> None:
    assert parse_policy(format_policy(lines)) == tuple(lines)


@given(lines_strategy, st.integers(1, 65535))
def test_first_matching_line_decides_else_ask(lines: list[PolicyLine], port: int) -> None:
    decision = decide(lines, port)
    matching = [line for line in lines if port in line.ports]
    if matching:
        assert (decision.action, decision.max_lifetime) == (
            matching[0].action,
            matching[0].max_lifetime,
        )
    else:
        assert decision == DEFAULT_DECISION and decision.action == NatAction.ASK


@given(lines_strategy, st.integers(1, 65535))
def test_candidates_never_leave_what_was_decided(lines: list[PolicyLine], wanted: int) -> None:
    decision = decide(lines, wanted)
    for port in candidate_ports(wanted, lines, decision):
        action = decide(lines, port).action
        assert action != NatAction.DENY
        if decision.action == NatAction.ALLOW:
            assert action == NatAction.ALLOW


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("ports=80", "policy"),
        ("action=allow", "policy"),
        ("ports=0 action=allow", "ports"),
        ("ports=90-80 action=allow", "ports"),
        ("ports=80 action=yes", "action"),
        ("ports=80 action=allow max-lifetime=-1", "max-lifetime"),
        ("ports=80 action=allow ports=81", "ports"),
        ("ports=80 action=allow colour=red", "policy"),
    ],
)
def test_bad_policy_lines_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_policy(f"ports=1 action=ask\n{text}\n")
    assert refused.value.field == field and "line 2" in str(refused.value)


@given(lines_strategy)
def test_policy_feature_value_round_trip(lines: list[PolicyLine]) -> None:
    value = policy_value(lines)
    assert "\n" not in value and value.isascii()
    assert policy_of({"portfwd-nat-policy": value}) == tuple(lines)


def test_no_policy_feature_is_the_empty_policy() -> None:
    assert policy_of({"portfwd.0123456789ab": "action=forward"}) == ()


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("ports=80 action=allow; ports=81 action=maybe", ("action", "line 2")),
        ("ports=80 action=allow\nports=81 action=deny", ("printable ASCII on one line",)),
        ("ports=80 action=allow max-lifetime=0", ("max-lifetime", "line 1")),
        ("; ".join(["ports=80 action=allow"] * 257), ("at most 256 lines",)),
        ("x" * 16385, ("at most 16384 characters",)),
    ],
)
def test_bad_policy_feature_values_name_the_feature_and_field(
    value: str, names: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_policy_feature(value)
    message = str(refused.value)
    assert message.startswith("portfwd-nat-policy: ") and "joined by ';'" in message
    assert all(name in message for name in names)


def test_descriptions_are_made_fit_for_a_comment() -> None:
    assert clean_description(" my <app>\n\0 ") == "my _app___"
    assert len(clean_description("x" * 500)) == 64


def test_pending_entries_join_time_out_and_settle() -> None:
    async def scenario() -> None:
        now = [100.0]
        table: PendingTable[tuple[str, int], str] = PendingTable(
            lambda: now[0], key=lambda ask: ask, timeout=10
        )
        first = table.add(("work", 80))
        assert table.add(("work", 80)) is first
        second = table.add(("work", 81))
        assert [e.id for e in table.entries()] == [first.id, second.id]
        PendingTable.settle(table.take(first.id), "granted")
        assert await first.outcome == "granted"
        now[0] = 111.0
        assert table.entries() == []
        assert await second.outcome is None  # timed out: refused
        with pytest.raises(KeyError):
            table.take(second.id)

    asyncio.run(scenario())


def test_pending_table_is_bounded() -> None:
    async def scenario() -> None:
        table: PendingTable[int, str] = PendingTable(lambda: 0.0, key=lambda ask: ask)
        for port in range(64):
            table.add(port)
        with pytest.raises(PendingFull):
            table.add(1000)

    asyncio.run(scenario())
