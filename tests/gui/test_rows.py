"""Table rows from the service's forward status JSON, outbound rows, pending asks, edits."""

import json

import pytest

from qubes_portfwd.gui.pending_ask import always_policy, duration_text, parse_pending, question
from qubes_portfwd.gui.rows import forward_rows, hops_text, outbound_rows
from qubes_portfwd.model import forward_status
from qubes_portfwd.model.errors import ValidationError

NOW = 1_700_000_000.0
RULE = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=0.0.0.0/0 via=sys-firewall,sys-net expire=1700000600 comment=web"
)


def _status_json(state: str, hops: list[tuple[str, str, str, str | None]], reason: str | None):
    return {
        "id": "0123456789ab",
        "target": "work",
        "rule": RULE,
        "family": 4,
        "state": state,
        "reason": reason,
        "hops": [{"qube": q, "role": r, "state": s, "error": e} for q, r, s, e in hops],
    }


def test_an_active_forward_reads_as_the_columns_say() -> None:
    payload = json.dumps(
        [
            _status_json(
                "active",
                [
                    ("sys-net", "edge", "applied", None),
                    ("sys-firewall", "netvm", "applied", None),
                    ("work", "target", "applied", None),
                ],
                None,
            )
        ]
    ).encode()
    [row] = forward_rows(forward_status.loads(payload), NOW)
    assert row.cells == (
        "external", "IPv4", "tcp", "80", "8080", "any", "in 10m00s", "web", "active",
        "sys-net ✔ → sys-firewall ✔ → work ✔",
    )  # fmt: skip
    assert "made for the path sys-net → sys-firewall" in row.details


def test_a_failed_hop_shows_its_state_reason_and_error() -> None:
    hops = [
        ("sys-net", "edge", "pending", None),
        ("sys-firewall", "netvm", "failed", "nft: table qubes missing"),
        ("work", "target", "applied", None),
    ]
    payload = json.dumps([_status_json("failed", hops, "sys-firewall: not applied")]).encode()
    [row] = forward_rows(forward_status.loads(payload), NOW)
    assert row.cells[-2] == "failed: sys-firewall: not applied"
    assert row.cells[-1] == "sys-net … → sys-firewall ✘ → work ✔"
    assert "sys-firewall: nft: table qubes missing" in row.details


def test_a_rule_this_client_cannot_read_still_shows_its_state() -> None:
    status = forward_status.from_json_value(
        {**_status_json("active", [], None), "rule": "action=forward nonsense=1"}
    )
    [row] = forward_rows([status], NOW)
    assert row.cells[0] == "?" and row.cells[1] == "IPv4" and row.cells[-2] == "active"
    assert hops_text(()) == "(no path)"


def test_outbound_rows_leave_forwards_out() -> None:
    lines = [
        "action=accept proto=tcp dst4=192.0.2.0/24 dstports=443-443",
        "action=accept specialtarget=dns",
        "action=accept proto=icmp icmptype=8",
        RULE,
        "action=drop",
    ]
    assert outbound_rows(lines, NOW) == [
        ("accept", "192.0.2.0/24", "tcp", "443", "never", "-"),
        ("accept", "DNS servers", "any", "*", "never", "-"),
        ("accept", "*", "icmp", "icmp type 8", "never", "-"),
        ("drop", "*", "any", "*", "never", "-"),
    ]


PENDING = {
    "id": "0a1b2c3d",
    "qube": "work",
    "via": "sys-firewall",
    "proto": "tcp",
    "port": "18085",
    "internal-port": "8085",
    "lifetime": "300",
    "origin": "NAT-PMP",
    "expires-in": "117",
    "description": "my game\x1b[31m",
}


def test_a_pending_request_reads_as_a_question() -> None:
    ask = parse_pending(PENDING)
    assert ask.description == "my game?[31m"  # a control character is never shown
    assert question(ask) == (
        "work asks sys-firewall to open TCP port 18085 (to its port 8085) to the outside, "
        "for 5 minutes."
    )
    assert duration_text(117) == "1 minute 57 seconds"
    assert duration_text(90061) == "1 day 1 hour"


@pytest.mark.parametrize(
    ("key", "value"), [("id", "xyz"), ("qube", "-bad"), ("port", "99999"), ("proto", "icmp")]
)
def test_a_malformed_pending_line_is_refused(key: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_pending({**PENDING, key: value})
    assert caught.value.field == key


def test_allow_always_puts_the_port_first_once() -> None:
    current = ["ports=18085 action=deny max-lifetime=3600", "ports=1-1023 action=deny"]
    assert always_policy(current, 18085) == ["ports=18085 action=allow", "ports=1-1023 action=deny"]
    assert always_policy([], 80) == ["ports=80 action=allow"]
