"""A hop is shown applied only when its agent applied the very entry published to it now."""

import pytest

from qubes_lab.entry_store import Status
from qubes_portfwd.controller.publisher import Snapshot
from qubes_portfwd.controller.status_view import forward_status
from qubes_portfwd.model.forward_status import ForwardState as ShownState
from qubes_portfwd.model.forward_status import HopState
from qubes_portfwd.model.rule import ForwardRule, forward_id
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.planner.values import ForwardPlan, ForwardState, HopRole, PlannedHop

RULE = parse_rule(
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=0.0.0.0/0"
)
assert isinstance(RULE, ForwardRule)
ID = forward_id("work", RULE)
KEY = f"/qubes-portfwd/{ID}/4"
EDGE = "role=dnat family=4 proto=tcp in=eth0 ports=80-80 to=10.137.0.6 toports=8080-8080"
TARGET = "role=accept family=4 proto=tcp ports=8080-8080 srchost=0.0.0.0/0"
PLANNED = {"sys-net": {KEY: EDGE}, "work": {KEY: TARGET}}
FORWARD = ForwardPlan(
    ID,
    "work",
    0,
    RULE,
    4,
    ForwardState.ACTIVE,
    None,
    (PlannedHop("sys-net", HopRole.EDGE, KEY), PlannedHop("work", HopRole.TARGET, KEY)),
)


def reported(generation: int, entry: str, handled: int, outcome: str = "applied") -> Snapshot:
    return Snapshot(generation, {KEY: entry}, Status(handled, {KEY: outcome}))


def edge_state(edge: Snapshot) -> HopState:
    target = reported(2, TARGET, 2)
    shown = forward_status(FORWARD, {"sys-net": edge, "work": target}, PLANNED)
    assert shown.hops[1].state == HopState.APPLIED
    return shown.hops[0].state


def test_applied_when_the_published_generation_carries_the_entry_and_was_applied() -> None:
    assert edge_state(reported(5, EDGE, 5)) == HopState.APPLIED


def test_a_report_of_an_earlier_generation_is_pending() -> None:
    assert edge_state(reported(5, EDGE, 4)) == HopState.PENDING


def test_a_report_of_a_generation_never_published_is_stale() -> None:
    """A store that started over (a restarted qube's fresh QubesDB counts from 1 again) next
    to the last report of the agent before it: that report describes another kernel."""
    assert edge_state(reported(1, EDGE, 7)) == HopState.PENDING


def test_an_applied_report_of_another_entry_under_the_same_key_is_pending() -> None:
    """The plan changed the edge's entry (same forward id) and the new one is not
    published yet: the kernel holds the old rule, not the one shown."""
    older = EDGE.replace("to=10.137.0.6", "to=10.137.0.9")
    assert edge_state(reported(5, older, 5)) == HopState.PENDING


def test_an_entry_being_repaired_is_pending_not_failed() -> None:
    shown = forward_status(
        FORWARD,
        {"sys-net": reported(5, EDGE, 5, "repairing"), "work": reported(2, TARGET, 2)},
        PLANNED,
    )
    assert [h.state for h in shown.hops] == [HopState.PENDING, HopState.APPLIED]
    assert shown.state == ShownState.ACTIVE and shown.reason is None


def test_an_error_for_the_published_generation_is_failed() -> None:
    shown = forward_status(
        FORWARD,
        {"sys-net": reported(5, EDGE, 5, "nft -f failed: x"), "work": reported(2, TARGET, 2)},
        PLANNED,
    )
    assert shown.hops[0].state == HopState.FAILED
    assert shown.hops[0].error == "nft -f failed: x"


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (reported(5, EDGE, 5), True),
        (reported(5, EDGE, 4), False),
        (reported(1, EDGE, 7), False),
        (reported(5, EDGE.replace("80-80", "81-81"), 5), False),
        (reported(5, EDGE, 5, "repairing"), False),
    ],
)
def test_the_publisher_opens_outer_hops_on_the_same_condition(
    snapshot: Snapshot, expected: bool
) -> None:
    assert snapshot.applied(KEY, EDGE) is expected


def test_rules_being_repaired_keep_outer_hops_but_a_failure_does_not() -> None:
    assert reported(5, EDGE, 5, "repairing").in_force(KEY)
    assert reported(6, EDGE, 5, "applied").in_force(KEY)  # a newer generation waits
    assert not reported(5, EDGE, 5, "nft -f failed: x").in_force(KEY)
