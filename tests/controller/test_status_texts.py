"""The status document's forward texts, kept between documents, are those encoded afresh."""

import dataclasses

from qubes_portfwd.controller.publisher import Snapshot
from qubes_portfwd.controller.status_view import StatusTexts, forward_statuses
from qubes_portfwd.model.db_layout import Status
from qubes_portfwd.model.forward_status import PUBLIC_PREFIX
from qubes_portfwd.model.rule import ForwardRule, forward_id
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.status_document import forward_text
from qubes_portfwd.planner.values import ForwardPlan, ForwardState, HopRole, Plan, PlannedHop


def forward(port: int, position: int, state: ForwardState = ForwardState.ACTIVE) -> ForwardPlan:
    rule = parse_rule(
        f"action=forward forwardtype=external proto=tcp srcports={port} dstports=8080 "
        "srchost=0.0.0.0/0"
    )
    assert isinstance(rule, ForwardRule)
    fid = forward_id("work", rule)
    key = f"/qubes-portfwd/{fid}/4"
    hops = (PlannedHop("sys-net", HopRole.EDGE, key), PlannedHop("work", HopRole.TARGET, key))
    reason = None if state == ForwardState.ACTIVE else "a reason"
    return ForwardPlan(fid, "work", position, rule, 4, state, reason, hops)


def plan_of(*forwards: ForwardPlan) -> Plan:
    entries: dict[str, dict[str, str]] = {"sys-net": {}, "work": {}}
    for f in forwards:
        if f.state == ForwardState.ACTIVE:
            for hop in f.hops:
                entries[hop.qube][hop.key] = f"entry of {f.forward_id} in {hop.qube}"
    return Plan(tuple(forwards), entries)


def stores(
    plan: Plan, generation: int, outcomes: dict[str, str], public: dict[str, str] | None = None
) -> dict[str, Snapshot]:
    """Every planned entry published in `generation`, reported with `outcomes` by key (else
    applied)."""
    snapshots = {}
    for qube, entries in plan.entries.items():
        per_key = {k: outcomes.get(k, "applied") for k in entries}
        shown = public if qube == "sys-net" and public else {}
        snapshots[qube] = Snapshot(generation, dict(entries), Status(generation, per_key), shown)
    return snapshots


def fresh(plan: Plan, snapshots: dict[str, Snapshot]) -> list[bytes]:
    return [forward_text(s) for s in forward_statuses(plan, snapshots)]


def test_kept_texts_follow_every_change_a_status_shows() -> None:
    a, b, c = forward(80, 0), forward(81, 1), forward(82, 2, ForwardState.CONFLICT)
    key_a = a.hops[0].key
    public = {f"{PUBLIC_PREFIX}{a.forward_id}/tcp/80": "192.0.2.1:8080"}
    texts = StatusTexts()
    steps = []
    plan = plan_of(a, b, c)
    steps.append((plan, stores(plan, 1, {})))
    steps.append((plan, stores(plan, 2, {})))  # a new generation, nothing else
    steps.append((plan, stores(plan, 3, {key_a: "refused"})))  # a hop fails
    steps.append((plan, stores(plan, 3, {key_a: "repairing"})))
    steps.append((plan, stores(plan, 4, {}, public)))  # a public endpoint shows up
    shifted = plan_of(dataclasses.replace(b, position=0), c)  # a removed, b moves up
    steps.append((shifted, stores(shifted, 5, {})))
    steps.append((plan_of(a, dataclasses.replace(b, state=ForwardState.CONFLICT)), {}))
    steps.append((plan, {}))  # no store read: every hop pending
    steps.append((plan, stores(plan, 6, {})))
    for plan, snapshots in steps:
        assert texts.texts(plan, snapshots) == fresh(plan, snapshots)
    assert forward_statuses(*steps[4])[0].public  # the endpoint was shown
