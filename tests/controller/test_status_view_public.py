"""The admin view shows where a VPN provider exposes a forward (from the edge's keeper)."""

import ipaddress
from types import SimpleNamespace

from qubes_lab.entry_store import Status
from qubes_portfwd.controller.publisher import Snapshot
from qubes_portfwd.controller.status_view import forward_status, public_endpoints
from qubes_portfwd.model.forward_status import PublicEndpoint
from qubes_portfwd.model.rule import ForwardRule, forward_id
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.planner.values import ForwardPlan, ForwardState, HopRole, PlannedHop

RULE = parse_rule(
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=0.0.0.0/0 via=sys-vpn"
)
assert isinstance(RULE, ForwardRule)
ID = forward_id("vpn-work", RULE)
KEY = f"/qubes-portfwd/{ID}/4"


def snapshot(public: dict[str, str] | None = None) -> Snapshot:
    status = Status(handled=1, per_key={KEY: "applied"})
    return Snapshot(generation=1, entries={KEY: "x"}, status=status, public=public or {})


PLANNED = {"sys-vpn": {KEY: "x"}, "vpn-work": {KEY: "x"}}


def plan(state: ForwardState = ForwardState.ACTIVE) -> ForwardPlan:
    hops = (PlannedHop("sys-vpn", HopRole.EDGE, KEY), PlannedHop("vpn-work", HopRole.TARGET, KEY))
    return ForwardPlan(ID, "vpn-work", 0, RULE, 4, state, None, hops)


def test_the_edges_report_becomes_the_forwards_public_endpoint() -> None:
    reported = {
        f"/qubes-portfwd-public/{ID}/tcp/80": "203.0.113.2:40001",
        "/qubes-portfwd-public/ba9876543210/tcp/81": "203.0.113.2:40002",  # another forward
        f"/qubes-portfwd-public/{ID}/tcp/99999": "203.0.113.2:1",  # malformed: dropped
    }
    snapshots = {"sys-vpn": snapshot(reported), "vpn-work": snapshot()}
    status = forward_status(plan(), snapshots, PLANNED)
    expected = PublicEndpoint("tcp", 80, ipaddress.IPv4Address("203.0.113.2"), 40001)
    assert status.public == (expected,)


def test_no_report_no_endpoint_and_inactive_forwards_show_none() -> None:
    assert public_endpoints(ID, None) == ()
    assert public_endpoints(ID, SimpleNamespace(public={})) == ()  # type: ignore[arg-type]
    reported = {f"/qubes-portfwd-public/{ID}/tcp/80": "203.0.113.2:40001"}
    snapshots = {"sys-vpn": snapshot(reported), "vpn-work": snapshot()}
    assert forward_status(plan(ForwardState.INACTIVE), snapshots, PLANNED).public == ()
