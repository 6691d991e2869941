"""Expiry: which rules ran out, and the next instant at which the plan changes by itself."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from planner_lab import BOOT, NOW, lab_topology, rules
from planner_strategies import scenarios

from qubes_portfwd.model.rule import ExpireAt, ForwardRule, Rule, UntilReboot
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.planner import Plan, plan
from qubes_portfwd.planner.expiry import live_rules, next_expiry, qubes_with_expired

WEB = "action=forward forwardtype=external proto=tcp srcports=80 srchost=0.0.0.0/0"

Scenario = tuple[Topology, dict[str, list[Rule]]]


def web(expire: ExpireAt | UntilReboot | None) -> Rule:
    (rule,) = rules(WEB)
    assert isinstance(rule, ForwardRule)
    return replace(rule, expire=expire)


def test_next_expiry_is_the_earliest_time_still_ahead() -> None:
    listed = {
        "work": [web(ExpireAt(int(NOW) + 30)), web(ExpireAt(int(NOW) - 1))],
        "personal": rules(f"action=drop proto=tcp dstports=25 expire={int(NOW) + 7}"),
        "vault": [web(UntilReboot(BOOT)), web(None)],
    }
    # The drop rule's instant is qubesd's timer, not the controller's (it expires forwards).
    assert next_expiry(listed, NOW) == NOW + 30
    assert next_expiry(listed, NOW + 30) is None


def test_the_controller_leaves_expired_accept_drop_rules_to_qubesd() -> None:
    listed = {"personal": rules(f"action=drop proto=tcp dstports=25 expire={int(NOW) - 1}")}
    assert next_expiry(listed, NOW - 2) is None
    assert qubes_with_expired(listed, NOW, BOOT) == []


def test_until_reboot_has_no_instant_but_expires_with_another_boot() -> None:
    listed = {"work": [web(UntilReboot(BOOT))]}
    assert next_expiry(listed, NOW) is None
    assert qubes_with_expired(listed, NOW, BOOT) == []
    assert qubes_with_expired(listed, NOW, "a-new-boot") == ["work"]


def test_live_rules_keep_the_order_of_the_rest() -> None:
    accept, drop = rules("action=accept proto=tcp", "action=drop")
    gone = web(ExpireAt(int(NOW)))  # expire=T is expired at T, as in Qubes
    kept = web(ExpireAt(int(NOW) + 1))
    assert live_rules([accept, gone, kept, drop], NOW, BOOT) == (accept, kept, drop)
    assert qubes_with_expired({"a": [accept], "b": [gone, kept]}, NOW, BOOT) == ["b"]


def test_a_forward_disappears_from_the_plan_at_its_expiry_instant() -> None:
    listed = {"work": [web(ExpireAt(int(NOW) + 5))]}
    at = next_expiry(listed, NOW)
    assert at is not None
    assert plan(listed, lab_topology(), at - 0.001, BOOT).forwards
    assert not plan(listed, lab_topology(), at, BOOT).forwards


def decisions(result: Plan) -> list[tuple[str, str, int, str, str | None]]:
    """The plan without rule positions (dropping expired rules shifts them)."""
    return [(f.target, f.forward_id, f.family, str(f.state), f.reason) for f in result.forwards]


@settings(deadline=None, max_examples=150)
@given(scenarios(), st.floats(0.0, 1.0))
def test_the_plan_changes_only_at_next_expiry(scenario: Scenario, fraction: float) -> None:
    """Waking at `next_expiry` is enough: nothing changes by itself before it."""
    topology, listed = scenario
    wake = next_expiry(listed, NOW)
    later = NOW + fraction * ((wake - NOW) if wake is not None else 1e6)
    if wake is not None and later >= wake:
        later = NOW
    assert plan(listed, topology, later, BOOT) == plan(listed, topology, NOW, BOOT)


@settings(deadline=None, max_examples=150)
@given(scenarios())
def test_dropping_expired_rules_from_the_files_changes_no_decision(scenario: Scenario) -> None:
    topology, listed = scenario
    pruned = {qube: list(live_rules(r, NOW, BOOT)) for qube, r in listed.items()}
    before, after = plan(listed, topology, NOW, BOOT), plan(pruned, topology, NOW, BOOT)
    assert after.entries == before.entries
    assert sorted(decisions(after)) == sorted(decisions(before))
    assert qubes_with_expired(pruned, NOW, BOOT) == []
