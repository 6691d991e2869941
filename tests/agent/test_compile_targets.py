"""The agent refuses DNATs to anything but its own downstream qubes, and opens SSDP replies."""

import ipaddress
import socket
import struct

from qubes_portfwd.agent.compile import build_script, left_out, refuse_foreign_targets
from qubes_portfwd.agent.downstream_targets import is_downstream_device, unicast_device
from qubes_portfwd.agent.entries import parse_entries, parse_settings
from qubes_portfwd.agent.rtnetlink import RTA_OIF, RTN_UNICAST, Route, parse_route

WORK = ipaddress.IPv4Address("10.137.0.6")
ROUTER = ipaddress.IPv4Address("192.0.2.1")
EMPTY_RULESET = '{"nftables": []}'
BASE_RULESET = (
    '{"nftables": ['
    + ",".join(
        f'{{"chain": {{"family": "ip", "table": "qubes", "name": "{name}", "handle": {i}}}}}'
        for i, name in enumerate(("custom-input", "custom-forward"), 1)
    )
    + "]}"
)


def _dnat(forward_id: str, to: ipaddress.IPv4Address) -> tuple[str, str]:
    return (
        f"/qubes-portfwd/{forward_id}/4",
        f"role=dnat family=4 proto=tcp in=eth0 ports=80-80 to={to} toports=8080-8080 "
        "srchost=0.0.0.0/0",
    )


def test_a_dnat_to_a_downstream_qube_is_kept_and_others_are_refused() -> None:
    parsed = parse_entries(dict([_dnat("aaaaaaaaaaaa", WORK), _dnat("bbbbbbbbbbbb", ROUTER)]))
    kept, refused = refuse_foreign_targets(parsed.hops, {WORK: "vif6.0", ROUTER: "eth0"})
    assert [h.forward_id for h in kept] == ["aaaaaaaaaaaa"]
    [skipped] = refused
    assert skipped.forward_id == "bbbbbbbbbbbb"
    assert "192.0.2.1 is not a qube behind this one" in skipped.reason
    assert "out of eth0" in skipped.reason


def test_an_unroutable_or_unknown_target_is_refused() -> None:
    parsed = parse_entries(dict([_dnat("aaaaaaaaaaaa", WORK)]))
    for devices in ({}, {WORK: None}, {WORK: "lo"}):
        kept, refused = refuse_foreign_targets(parsed.hops, devices)
        assert kept == () and len(refused) == 1


def test_refused_hops_open_nothing_and_are_reported_by_key() -> None:
    entries = dict([_dnat("aaaaaaaaaaaa", WORK), _dnat("bbbbbbbbbbbb", ROUTER)])
    parsed = parse_entries(entries)
    settings = parse_settings({"/name": "sys-firewall"})
    compiled = build_script(parsed, settings, BASE_RULESET, {}, {WORK: "vif6.0", ROUTER: "eth0"})
    assert "dnat ip to 10.137.0.6" in compiled.script
    assert "192.0.2.1" not in compiled.script
    errors = left_out(compiled)
    assert list(errors) == ["/qubes-portfwd/bbbbbbbbbbbb/4"]
    assert errors["/qubes-portfwd/bbbbbbbbbbbb/4"].startswith("not applied: to=192.0.2.1")


def _route(kind: int, *attributes: bytes) -> bytes:
    return struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 254, 0, 0, kind, 0) + b"".join(
        attributes
    )


def _oif(index: int) -> bytes:
    return struct.pack("=HHI", 8, RTA_OIF, index)


def test_route_answers_give_the_device_of_unicast_routes_only() -> None:
    names = {2: "eth0", 5: "vif6.0", 7: "x" * 16}.get

    def device(answer: bytes) -> str | None:
        return unicast_device(parse_route(answer), names)

    assert parse_route(_route(RTN_UNICAST, _oif(5))) == Route(RTN_UNICAST, 5)
    assert device(_route(RTN_UNICAST, _oif(5))) == "vif6.0"
    assert device(_route(RTN_UNICAST, _oif(2))) == "eth0"
    assert device(_route(2, _oif(1))) is None  # local
    assert device(_route(3, _oif(2))) is None  # broadcast
    assert device(_route(RTN_UNICAST)) is None  # no output interface
    assert device(_route(RTN_UNICAST, _oif(9))) is None  # gone
    assert device(_route(RTN_UNICAST, _oif(7))) is None  # no such name
    assert device(_route(RTN_UNICAST, struct.pack("=HH", 6, RTA_OIF))) is None
    assert parse_route(b"short") is None
    assert unicast_device(None, names) is None
    assert is_downstream_device("vif12.0")
    assert not is_downstream_device("eth0") and not is_downstream_device(None)


NATD_KEYS = {
    "/qubes-ip": "10.137.0.6",
    "/qubes-ip6": "fd09:24ef:4179::a89:6",
    "/qubes-gateway": "10.137.0.3",
    "/qubes-service/portfwd-natd-gateway": "1",
}


def test_behind_natd_the_gateways_ssdp_reply_is_let_in_and_only_that() -> None:
    settings = parse_settings(NATD_KEYS)
    assert settings.natd_gateway == ipaddress.IPv4Address("10.137.0.3")
    compiled = build_script(parse_entries({}), settings, BASE_RULESET, {}, {})
    rule = (
        "add rule ip qubes portfwd-input ct state new ip saddr 10.137.0.3 "
        "ip daddr 10.137.0.6 udp sport 1900 accept"
    )
    lines = compiled.script.splitlines()
    assert rule in lines
    # After the flush of our input chain, in the same script: it survives the next apply.
    assert lines.index(rule) > lines.index("flush chain ip qubes portfwd-input")
    assert "1900" not in compiled.script.replace(rule, "")


def test_without_natd_or_with_a_bad_gateway_nothing_opens() -> None:
    for keys in (
        {**NATD_KEYS, "/qubes-service/portfwd-natd-gateway": "0"},
        {k: v for k, v in NATD_KEYS.items() if k != "/qubes-service/portfwd-natd-gateway"},
        {**NATD_KEYS, "/qubes-gateway": "10.137.0.3; accept"},
    ):
        settings = parse_settings(keys)
        compiled = build_script(parse_entries({}), settings, BASE_RULESET, {}, {})
        assert "1900" not in compiled.script
    bad = parse_settings({**NATD_KEYS, "/qubes-gateway": "nonsense"})
    assert bad.natd_gateway is None
    assert any("/qubes-gateway" in problem for problem in bad.problems)


def test_no_base_table_means_no_ssdp_rule() -> None:
    settings = parse_settings(NATD_KEYS)
    compiled = build_script(parse_entries({}), settings, EMPTY_RULESET, {}, {})
    assert "1900" not in compiled.script
