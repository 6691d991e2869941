"""The Firewall tab's outbound choices from and to Qubes' rule lines (pure)."""

import pytest

from qubes_portfwd.gui.outbound_conf import (
    DNS_RULE,
    DROP_ALL,
    ICMP_RULE,
    OutboundConf,
    conf_lines,
    full_access_minutes,
    read_conf,
    read_only_rows,
)
from qubes_portfwd.model.rule import FilterRule
from qubes_portfwd.model.rule_text import parse_rule

NOW = 1_800_000_000
WEB = "action=accept dsthost=www.example.com proto=tcp dstports=443-443 comment=web"
NET = "action=accept dst4=192.168.0.0/16"


def _rule(line: str) -> FilterRule:
    rule = parse_rule(line)
    assert isinstance(rule, FilterRule)
    return rule


def test_allow_all_is_the_single_accept() -> None:
    read = read_conf(["action=accept"])
    assert read.conf == OutboundConf(allow_all=True, allow_dns=False, allow_icmp=False)
    assert conf_lines(OutboundConf(allow_all=True)) == ["action=accept"]


def test_a_limited_list_reads_back_as_written() -> None:
    lines = [
        "action=accept dsthost=www.example.com proto=tcp dstports=443 comment=web",
        NET,
        f"action=accept expire={NOW + 600}",
        DNS_RULE,
        ICMP_RULE,
        DROP_ALL,
    ]
    read = read_conf(lines)
    assert read.conf is not None and read.blockers == ()
    conf = read.conf
    assert not conf.allow_all and conf.allow_dns and conf.allow_icmp
    assert conf.full_access_until == NOW + 600
    assert [r.dsthost.text for r in conf.rules if r.dsthost] == [
        "www.example.com",
        "192.168.0.0/16",
    ]
    written = conf_lines(conf)
    assert read_conf(written).conf == conf
    assert written[-4:] == [f"action=accept expire={NOW + 600}", DNS_RULE, ICMP_RULE, DROP_ALL]


def test_dns_and_icmp_left_out_when_unchecked() -> None:
    conf = OutboundConf(allow_all=False, rules=(_rule(NET),), allow_dns=False, allow_icmp=True)
    assert conf_lines(conf) == [NET, ICMP_RULE, DROP_ALL]
    assert read_conf(conf_lines(conf)).conf == conf


def test_allow_all_keeps_the_listed_destinations_and_drops_the_limits() -> None:
    conf = OutboundConf(allow_all=True, rules=(_rule(NET),), full_access_until=NOW)
    assert conf_lines(conf) == [NET, "action=accept"]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("action=drop dst4=10.9.9.9/32", "a drop rule before the end"),
        ("action=accept proto=icmp icmptype=8", "an ICMP rule"),
        ("action=accept dst4=10.0.0.0/8 proto=icmp", "an ICMP rule"),
        (f"action=accept expire={NOW} dst4=10.0.0.1/32", "an expiring rule for one destination"),
        ("action=accept specialtarget=dns comment=resolver", "special target dns"),
        ("action=accept", "an accept-all rule before the end"),
        (f"action=accept expire={NOW} comment=x", "a temporary full access with a comment"),
    ],
)
def test_a_rule_the_tab_cannot_show_blocks_editing_and_says_why(line: str, why: str) -> None:
    lines = [NET, line, DNS_RULE, ICMP_RULE, DROP_ALL]
    read = read_conf(lines)
    assert read.conf is None
    [blocker] = read.blockers
    assert blocker.line == line and blocker.reason.startswith(why)
    rows = read_only_rows(lines, read.blockers, NOW)
    assert len(rows) == 5 and rows[1][-1] == blocker.reason and rows[0][-1] == ""


def test_a_last_rule_that_is_not_accept_or_drop_all_blocks() -> None:
    read = read_conf([NET])
    assert read.conf is None and "last rule" in read.blockers[0].reason


def test_an_empty_list_blocks_and_each_of_several_is_named() -> None:
    empty = read_conf([])
    assert empty.conf is None and "empty" in empty.blockers[0].reason
    assert read_only_rows([], empty.blockers, NOW)[0][-1] == empty.blockers[0].reason
    two = read_conf(
        ["action=drop dst4=10.0.0.1/32", "action=accept proto=icmp icmptype=0", DROP_ALL]
    )
    assert len(two.blockers) == 2


def test_unreadable_line_blocks_and_forward_lines_are_kept_unchanged() -> None:
    bad = read_conf(["action=accept proto=sctp", "action=accept"])
    assert bad.conf is None and bad.blockers[0].reason.startswith("unreadable")
    forward = (
        "action=forward forwardtype=external proto=tcp srcports=80 dstports=80 srchost=0.0.0.0/0"
    )
    read = read_conf([forward, "action=accept"])
    assert read.conf is not None and read.kept == (forward,)
    assert conf_lines(read.conf, read.kept) == [forward, "action=accept"]


def test_full_access_minutes_round_up_and_vanish_when_past() -> None:
    assert full_access_minutes(NOW + 61, NOW) == 2
    assert full_access_minutes(NOW + 60, NOW) == 1
    assert full_access_minutes(NOW, NOW) is None
    assert full_access_minutes(None, NOW) is None
