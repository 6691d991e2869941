"""What the CLIs print: qvm-firewall's table and qvm-portfwd's forwards with their paths."""

from qubes_portfwd.cli.firewall_table import firewall_rows
from qubes_portfwd.cli.forward_view import (
    concerns,
    forward_json,
    forward_line,
    path_text,
    table_lines,
)
from qubes_portfwd.cli.table import format_table
from qubes_portfwd.model.forward_status import ForwardState, ForwardStatus, HopState, HopStatus
from qubes_portfwd.model.rule import forward_id
from qubes_portfwd.model.rule_text import parse_rule

NOW = 1_700_000_000.0
DEMO_RULE = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=192.0.2.0/24 via=sys-firewall,sys-net expire=1700000600 comment=web"
)
INTERNAL_RULE = (
    "action=forward forwardtype=internal proto=tcp srcports=22-22 dstports=22-22 "
    "srchost=personal,vault via=sys-firewall"
)


def hop(qube: str, role: str, state: HopState = HopState.APPLIED, error: str | None = None):
    return HopStatus(qube, role, state, error)


def demo_status(**changes: object) -> ForwardStatus:
    fields: dict[str, object] = {
        "id": forward_id("work", parse_rule(DEMO_RULE)),  # type: ignore[arg-type]
        "target": "work",
        "rule": DEMO_RULE,
        "family": 4,
        "state": ForwardState.ACTIVE,
        "reason": None,
        "hops": (hop("sys-net", "edge"), hop("sys-firewall", "netvm"), hop("work", "target")),
    }
    fields.update(changes)
    return ForwardStatus(**fields)  # type: ignore[arg-type]


def test_qubes_table_is_unchanged_without_forwards() -> None:
    rules = [
        parse_rule("action=accept dst4=10.0.0.0/8 proto=tcp dstports=443-443"),
        parse_rule("action=drop expire=1700000300 comment=bye"),
    ]
    assert format_table(firewall_rows("work", rules, NOW)) == [
        "NO  ACTION  HOST        PROTOCOL  PORT(S)  SPECIAL TARGET  ICMP TYPE  EXPIRE  COMMENT",
        "0   accept  10.0.0.0/8  tcp       443      -               -          -       -",
        "1   drop    -           -         -        -               -          +300s   bye",
    ]


def test_forward_rows_show_type_mapping_sources_and_id() -> None:
    rules = [parse_rule(DEMO_RULE), parse_rule("action=accept")]
    header, forward_row, accept_row = firewall_rows("work", rules, NOW)
    assert header[:4] == ["NO", "ACTION", "FWD TYPE", "SRCHOST"]
    assert header[-2:] == ["ID", "COMMENT"]
    cells = dict(zip(header, forward_row, strict=True))
    assert cells["FWD TYPE"] == "external"
    assert cells["SRCHOST"] == "192.0.2.0/24"
    assert cells["PORT(S)"] == "80→8080"
    assert cells["EXPIRE"] == "+600s"
    assert cells["ID"] == forward_id("work", parse_rule(DEMO_RULE))  # type: ignore[arg-type]
    assert dict(zip(header, accept_row, strict=True))["FWD TYPE"] == "-"


def test_external_path_is_drawn_from_the_lan_hop_by_hop() -> None:
    status = demo_status(
        hops=(
            hop("sys-net", "edge"),
            hop("sys-firewall", "netvm", HopState.PENDING),
            hop("work", "target"),
        )
    )
    assert path_text(status, parse_rule(DEMO_RULE)) == (  # type: ignore[arg-type]
        "LAN → sys-net[applied] → sys-firewall[pending] → work:8080[applied]"
    )


def test_a_tunnel_edge_is_drawn_from_the_vpn() -> None:
    status = demo_status(
        target="vpn-work", hops=(hop("sys-vpn", "edge"), hop("vpn-work", "target"))
    )
    assert path_text(status, parse_rule(DEMO_RULE), {"sys-vpn"}).startswith("VPN → sys-vpn")  # type: ignore[arg-type]


def test_internal_path_starts_at_the_allowed_qubes() -> None:
    status = demo_status(
        rule=INTERNAL_RULE, hops=(hop("sys-firewall", "netvm"), hop("work", "target"))
    )
    assert path_text(status, parse_rule(INTERNAL_RULE)) == (  # type: ignore[arg-type]
        "personal,vault → sys-firewall[applied] → work:22[applied]"
    )


def test_table_row_and_details() -> None:
    status = demo_status(
        state=ForwardState.FAILED,
        reason="a hop failed",
        hops=(hop("sys-net", "edge", HopState.FAILED, "nft: syntax error"), hop("work", "target")),
    )
    line = forward_line(status, NOW)
    assert line.cells[1:] == (
        "work",
        "external",
        "4",
        "tcp",
        "80→8080",
        "192.0.2.0/24",
        "10m00s",
        "failed",
    )
    assert line.details == (
        "path: LAN → sys-net[failed] → work:8080[applied]",
        "failed: a hop failed",
        "sys-net: nft: syntax error",
        "comment: web",
    )
    output = table_lines([line])
    assert output[0].split() == [
        "ID",
        "TARGET",
        "TYPE",
        "IP",
        "PROTO",
        "PORTS",
        "SOURCES",
        "EXPIRES",
        "STATE",
    ]
    assert output[1].startswith(status.id)
    assert output[2] == "    path: LAN → sys-net[failed] → work:8080[applied]"


def test_inactive_forward_without_path_shows_its_reason() -> None:
    status = demo_status(state=ForwardState.INACTIVE, reason="work has no netvm", hops=())
    assert forward_line(status, NOW).details[:2] == (
        "path: (no path)",
        "inactive: work has no netvm",
    )


def test_unreadable_rule_text_still_lists_the_forward() -> None:
    line = forward_line(demo_status(rule="action=forward frobnicate=yes"), NOW)
    assert line.cells[2] == "?"


def test_json_spells_out_the_rule() -> None:
    value = forward_json(demo_status(), NOW)
    assert value["outside_ports"] == "80"
    assert value["qube_ports"] == "8080"
    assert value["sources"] == ["192.0.2.0/24"]
    assert value["expires_in"] == 600
    assert [h["state"] for h in value["hops"]] == ["applied", "applied", "applied"]


def test_a_qubes_view_holds_its_forwards_and_those_through_it() -> None:
    status = demo_status()
    assert concerns(status, "work")
    assert concerns(status, "sys-firewall")
    assert not concerns(status, "personal")
