"""Which provider mappings a tunnel qube's entries ask for."""

from qubes_portfwd.tunnel.wanted import UPLINK_KEY, MappingKey, wanted_mappings

ID1 = "0123456789ab"
ID2 = "ba9876543210"


def _dnat(proto: str, ports: str, inbound: str = "wg0", family: int = 4) -> str:
    to = "10.137.0.9" if family == 4 else "fd09:24ef:4179::a89:9"
    return (
        f"role=dnat family={family} proto={proto} in={inbound} ports={ports} to={to} "
        f"toports={ports} srchost={'0.0.0.0/0' if family == 4 else '::/0'}"
    )


def test_one_mapping_per_protocol_and_port_entering_by_the_uplink() -> None:
    entries = {
        UPLINK_KEY: "wg0",
        f"/qubes-portfwd/{ID1}/4": _dnat("tcp,udp", "80-81"),
        f"/qubes-portfwd/{ID2}/4": _dnat("tcp", "81-81"),
    }
    wanted = wanted_mappings(entries)
    assert wanted.mappings == {
        MappingKey("tcp", 80): {ID1},
        MappingKey("tcp", 81): {ID1, ID2},
        MappingKey("udp", 80): {ID1},
        MappingKey("udp", 81): {ID1},
    }
    assert wanted.skipped == ()


def test_other_interfaces_ipv6_and_accept_hops_need_no_provider_port() -> None:
    entries = {
        UPLINK_KEY: "wg0",
        f"/qubes-portfwd/{ID1}/4": _dnat("tcp", "80-80", inbound="downstream"),
        f"/qubes-portfwd/{ID1}/6": _dnat("tcp", "80-80", family=6),
        f"/qubes-portfwd/{ID2}/4": "role=accept family=4 proto=tcp ports=80-80 srchost=0.0.0.0/0",
    }
    assert wanted_mappings(entries).mappings == {}


def test_without_an_uplink_key_nothing_is_wanted() -> None:
    assert wanted_mappings({f"/qubes-portfwd/{ID1}/4": _dnat("tcp", "80-80")}).mappings == {}


def test_malformed_entries_are_reported_not_fatal() -> None:
    entries = {
        UPLINK_KEY: "wg0",
        f"/qubes-portfwd/{ID1}/4": "role=dnat family=4 proto=sctp",
        f"/qubes-portfwd/{ID2}/4": _dnat("udp", "53-53"),
    }
    wanted = wanted_mappings(entries)
    assert wanted.mappings == {MappingKey("udp", 53): {ID2}}
    assert len(wanted.skipped) == 1 and ID1 in wanted.skipped[0]


def test_a_wide_range_is_capped() -> None:
    entries = {UPLINK_KEY: "wg0", f"/qubes-portfwd/{ID1}/4": _dnat("tcp", "1000-1999")}
    wanted = wanted_mappings(entries, limit=10)
    assert len(wanted.mappings) == 10
    assert len(wanted.skipped) == 990
