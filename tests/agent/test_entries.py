"""Reading a qube's entries: broken ones open nothing and are reported by key."""

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.agent.entries import parse_entries, parse_settings
from qubes_portfwd.agent.status import entry_status, overall_error
from qubes_portfwd.model.entries import AcceptHop, DnatHop

DNAT_KEY = "/qubes-portfwd/0123456789ab/4"
DNAT = (
    "role=dnat family=4 proto=tcp in=eth0 ports=80-80 to=10.137.0.6 toports=8080-8080 "
    "srchost=0.0.0.0/0"
)
ACCEPT_KEY = "/qubes-portfwd/0123456789ab/6"
ACCEPT = "role=accept family=6 proto=tcp,udp ports=8080-8080 srchost=2001:db8::/32"
WORK = "10.137.0.6"


def test_valid_hops_are_parsed() -> None:
    parsed = parse_entries({DNAT_KEY: DNAT, ACCEPT_KEY: ACCEPT, "/name": "sys-net"})
    assert [type(h) for h in parsed.hops] == [DnatHop, AcceptHop]
    assert parsed.errors == {}


def test_a_broken_forward_is_left_out_and_reported() -> None:
    broken_key = "/qubes-portfwd/ba0000000000/4"
    parsed = parse_entries({DNAT_KEY: DNAT, broken_key: DNAT.replace("ports=80-80", "ports=0")})
    assert [h.forward_id for h in parsed.hops] == ["0123456789ab"]
    assert parsed.errors[broken_key].startswith("ports:")


def test_a_forward_key_that_is_not_an_id_is_reported() -> None:
    key = "/qubes-portfwd/../../4"
    parsed = parse_entries({key: DNAT})
    assert parsed.hops == ()
    assert parsed.errors[key].startswith("key:")


def test_an_entry_written_as_before_is_its_earlier_hop() -> None:
    earlier = parse_entries({DNAT_KEY: DNAT, ACCEPT_KEY: ACCEPT})
    again = parse_entries({DNAT_KEY: DNAT, ACCEPT_KEY: ACCEPT}, earlier.hops)
    assert again == earlier
    assert all(new is old for new, old in zip(again.hops, earlier.hops, strict=True))


def test_changed_or_broken_entries_are_parsed_again_whatever_came_before() -> None:
    earlier = parse_entries({DNAT_KEY: DNAT, ACCEPT_KEY: ACCEPT})
    other_key = "/qubes-portfwd/ba0000000000/4"
    now = {
        DNAT_KEY: DNAT.replace("8080-8080", "8081-8081"),
        ACCEPT_KEY: ACCEPT.replace("ports=8080-8080", "ports=0"),
        other_key: DNAT,
    }
    assert parse_entries(now, earlier.hops) == parse_entries(now)
    # Written differently but meaning the same: parsed, to an equal hop.
    respelled = {DNAT_KEY: DNAT.replace("srchost=0.0.0.0/0", "srchost=0.0.0.0/00")}
    assert parse_entries(respelled, earlier.hops) == parse_entries(respelled)


@given(
    st.dictionaries(
        st.sampled_from([DNAT_KEY, ACCEPT_KEY, "/qubes-portfwd/ba0000000000/4"]),
        st.sampled_from([DNAT, ACCEPT, DNAT.replace("proto=tcp", "proto=udp,tcp"), "role=x"]),
    ),
    st.dictionaries(
        st.sampled_from([DNAT_KEY, ACCEPT_KEY, "/qubes-portfwd/ba0000000000/4"]),
        st.sampled_from([DNAT, ACCEPT, DNAT.replace("proto=tcp", "proto=udp,tcp")]),
    ),
)
def test_earlier_hops_never_change_the_outcome(
    untrusted_entries: dict[str, str], before: dict[str, str]
) -> None:
    earlier = parse_entries(before).hops
    assert parse_entries(untrusted_entries, earlier) == parse_entries(untrusted_entries)


def test_qubes_firewall_entries_are_neither_read_nor_reported() -> None:
    # Qubes' worker owns them: the agent applies and reports its forwards only.
    entries = {
        DNAT_KEY: DNAT,
        f"/qubes-firewall/{WORK}": "",
        f"/qubes-firewall/{WORK}/policy": "drop",
        f"/qubes-firewall/{WORK}/0000": "action=accept proto=tcp dstports=99999",
    }
    parsed = parse_entries(entries)
    assert parsed.errors == {}
    assert entry_status(entries, parsed, None) == {DNAT_KEY: "applied"}


def test_status_reports_applied_errors_and_apply_failures() -> None:
    broken_key = "/qubes-portfwd/ba0000000000/4"
    entries = {DNAT_KEY: DNAT, broken_key: "role=nonsense", "/name": "sys-net"}
    parsed = parse_entries(entries)
    assert entry_status(entries, parsed, None) == {
        DNAT_KEY: "applied",
        broken_key: parsed.errors[broken_key],
    }
    failed = entry_status(entries, parsed, "not applied: nft -f failed: boom")
    assert failed[DNAT_KEY] == "not applied: nft -f failed: boom"
    assert failed[broken_key] == parsed.errors[broken_key]
    assert overall_error(None, []) is None
    assert overall_error("x", ["y"]) == "x; y"


def test_settings() -> None:
    settings = parse_settings(
        {
            "/name": "sys-firewall",
            "/qubes-ip": "10.137.0.3",
            "/qubes-ip6": "not-an-ip",
        }
    )
    assert settings.name == "sys-firewall"
    assert [str(s) for s in settings.addresses] == ["10.137.0.3"]
    assert settings.problems and "/qubes-ip6" in settings.problems[0]
    assert parse_settings({"/name": "bad name!"}).name is None


_KEY_PARTS = st.sampled_from(
    [
        "/qubes-portfwd/",
        "/qubes-firewall/",
        "0123456789ab",
        "10.137.0.6",
        "/",
        "4",
        "6",
        "policy",
        "0000",
        "x",
    ]
)
_VALUE_PARTS = st.sampled_from(
    [
        "role=dnat",
        "role=accept",
        " ",
        "family=4",
        "proto=tcp",
        "ports=80",
        "toports=1-2",
        "to=10.137.0.6",
        "srchost=0.0.0.0/0",
        "in=eth0",
        "action=accept",
        "drop",
        "=",
        "comment=",
    ]
)


@given(
    st.dictionaries(
        st.lists(_KEY_PARTS, min_size=1, max_size=6).map("".join),
        st.lists(_VALUE_PARTS, max_size=10).map("".join),
        max_size=8,
    )
)
def test_any_input_is_either_used_or_reported(untrusted_entries: dict[str, str]) -> None:
    parsed = parse_entries(untrusted_entries)
    status = entry_status(untrusted_entries, parsed, None)
    used = {f"/qubes-portfwd/{h.forward_id}/{h.family}" for h in parsed.hops}
    assert set(status) == {k for k in untrusted_entries if k.startswith("/qubes-portfwd/")}
    for key, outcome in status.items():
        assert (outcome == "applied") == (key in used)
