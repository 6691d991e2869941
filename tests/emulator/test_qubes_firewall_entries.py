"""Qubes' outbound firewall entries as the lab's qubesd writes them (core-admin's
`qdb_entries`) and as the emulated worker reads them back; malformed ones are refused."""

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given

from qubes_lab.qube_db import FileQubeDb
from qubes_lab.qubes_firewall.dom0 import FirewallEntriesWriter, next_filter_expiry
from qubes_lab.qubes_firewall.entries import (
    FIREWALL_PREFIX,
    FirewallEntry,
    format_firewall,
    parse_firewall,
    qdb_entries,
)
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import Action, FilterRule, Rule
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.topology import Qube, Topology
from strategies import firewall_entries, untimed

NOW, BOOT = 1_700_000_000.0, "boot-1"
OUTBOUND = (
    "action=accept dst4=192.0.2.0/24 proto=tcp dstports=443-443",
    "action=accept dst6=2001:db8::/32",
    "action=accept dsthost=example.com",
    "action=drop proto=udp",
    f"action=accept expire={int(NOW) - 1} specialtarget=dns",
    f"action=accept expire={int(NOW) + 1} proto=icmp",
)


def rules(*lines: str) -> list[Rule]:
    return [parse_rule(line) for line in lines]


def test_each_family_gets_its_rules_numbered_as_core_admin_does() -> None:
    # Core-admin numbers by place in the whole list: a left-out rule leaves a gap.
    assert qdb_entries(rules(*OUTBOUND), 4, NOW, BOOT) == {
        "policy": "drop",
        "0000": "action=accept dst4=192.0.2.0/24 proto=tcp dstports=443-443",
        "0002": "action=accept dsthost=example.com",
        "0003": "action=drop proto=udp",
        "0005": "action=accept proto=icmp",
    }
    assert qdb_entries(rules(*OUTBOUND), 6, NOW, BOOT) == {
        "policy": "drop",
        "0001": "action=accept dst6=2001:db8::/32",
        "0002": "action=accept dsthost=example.com",
        "0003": "action=drop proto=udp",
        "0005": "action=accept proto=icmp",
    }


def test_entries_read_back_through_the_worker_parser() -> None:
    values = qdb_entries(rules(*OUTBOUND), 4, NOW, BOOT)
    entry = parse_firewall("10.137.0.6", values)
    assert entry.policy == "drop" and len(entry.rules) == 4


def test_qubes_default_list_is_accept() -> None:
    assert qdb_entries([FilterRule(Action.ACCEPT)], 4, NOW, BOOT) == {
        "policy": "drop",
        "0000": "action=accept",
    }


def test_only_accept_drop_rules_expire_on_qubesds_timer() -> None:
    timed = rules(
        f"action=accept expire={int(NOW) + 7}",
        f"action=forward forwardtype=external proto=tcp srcports=80 srchost=0.0.0.0/0 "
        f"expire={int(NOW) + 3}",
    )
    assert next_filter_expiry({"work": timed}, NOW) == NOW + 7


def _topology() -> Topology:
    return Topology.of(
        Qube("sys-net", 2, klass="StandaloneVM", provides_network=True),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True),
        Qube("work", 6, netvm="sys-firewall"),
    )


def test_the_writer_replaces_a_qubes_entries_and_writes_the_marker_last(tmp_path: Path) -> None:
    topology = _topology()
    netvm = topology["work"].netvm
    assert netvm is not None
    address = topology["work"].address4
    db = FileQubeDb(tmp_path / netvm)
    db.write(f"{FIREWALL_PREFIX}{address}/0007", b"action=accept")  # stale: must go
    db.watch(f"{FIREWALL_PREFIX}{address}")
    writer = FirewallEntriesWriter(lambda qube: FileQubeDb(tmp_path / qube))
    listed = {"work": rules("action=drop proto=udp")}
    writer.reload_for_vm(topology, lambda q: listed.get(q, ()), "work", NOW, BOOT)
    written = db.multiread(f"{FIREWALL_PREFIX}{address}")
    assert written == {
        f"{FIREWALL_PREFIX}{address}": b"",
        f"{FIREWALL_PREFIX}{address}/0000": b"action=drop proto=udp",
        f"{FIREWALL_PREFIX}{address}/policy": b"drop",
    }
    # Only the marker fires the worker's watch on the bare path.
    assert db.read_watch() == f"{FIREWALL_PREFIX}{address}"


def test_reloading_a_netvm_removes_qubes_no_longer_behind_it(tmp_path: Path) -> None:
    topology = _topology()
    netvm = topology["work"].netvm
    assert netvm is not None
    db = FileQubeDb(tmp_path / netvm)
    db.write(f"{FIREWALL_PREFIX}10.137.99.99/policy", b"accept")
    db.write(f"{FIREWALL_PREFIX}10.137.99.99", b"")
    writer = FirewallEntriesWriter(lambda qube: FileQubeDb(tmp_path / qube))
    writer.reload_netvm(topology, lambda q: (FilterRule(Action.ACCEPT),), netvm, NOW, BOOT)
    sources = {p.split("/")[2] for p in db.list(FIREWALL_PREFIX)}
    assert "10.137.99.99" not in sources
    assert str(topology["work"].address4) in sources


@untimed
@given(firewall_entries())
def test_any_firewall_entry_reads_back(entry: FirewallEntry) -> None:
    base = f"{FIREWALL_PREFIX}{entry.address}/"
    relative = {k[len(base) :]: v for k, v in format_firewall(entry).items()}
    assert parse_firewall(str(entry.address), relative) == entry


def test_firewall_entry_in_qubes_qubesdb_form() -> None:
    entry = FirewallEntry(
        ipaddress.IPv4Address("10.137.0.5"),
        "drop",
        (
            parse_rule("action=accept dst4=10.0.0.0/8 proto=tcp dstports=443-443"),  # type: ignore[arg-type]
            FilterRule(Action.ACCEPT, specialtarget="dns"),
        ),
    )
    assert format_firewall(entry) == {
        "/qubes-firewall/10.137.0.5/policy": "drop",
        "/qubes-firewall/10.137.0.5/0000": (
            "action=accept dst4=10.0.0.0/8 proto=tcp dstports=443-443"
        ),
        "/qubes-firewall/10.137.0.5/0001": "action=accept specialtarget=dns",
    }


GOOD_FIREWALL = {"policy": "drop", "0000": "action=accept proto=tcp dstports=443-443"}


@pytest.mark.parametrize(
    ("address", "values", "field", "says"),
    [
        ("work", GOOD_FIREWALL, "key", "is not an address"),
        ("10.137.0.05", GOOD_FIREWALL, "key", "is not an address"),
        ("fe80::1%eth0", GOOD_FIREWALL, "key", "is not an address"),
        ("10.137.0.5", {**GOOD_FIREWALL, "policy": "reject"}, "policy", "accept or drop"),
        ("10.137.0.5", {"0000": "action=accept"}, "policy", "accept or drop"),
        ("10.137.0.5", {**GOOD_FIREWALL, "12": "action=drop"}, "key", "four-digit"),
        ("10.137.0.5", {**GOOD_FIREWALL, "0000": "action=accept expire=5"}, "0000", "QubesDB form"),
        ("10.137.0.5", {**GOOD_FIREWALL, "0000": "action=accept comment=x"}, "0000", "QubesDB"),
        (
            "10.137.0.5",
            {
                **GOOD_FIREWALL,
                "0000": "action=forward forwardtype=external srcports=1 srchost=::/0",
            },
            "0000",
            "accept/drop rule",
        ),
        ("10.137.0.5", {**GOOD_FIREWALL, "0000": "action=accept proto=gre"}, "proto", "expected"),
    ],
)
def test_malformed_firewall_entries_refused(
    address: str, values: dict[str, str], field: str, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_firewall(address, values)
    assert caught.value.field == field
    assert says in caught.value.message


def test_gaps_in_the_numbers_are_read_in_order() -> None:
    entry = parse_firewall(
        "10.137.0.5", {"policy": "drop", "0003": "action=drop proto=udp", "0001": "action=accept"}
    )
    assert [str(r.action) for r in entry.rules] == ["accept", "drop"]
