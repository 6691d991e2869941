"""How the emulated qubes-firewall worker reads `/qubes-firewall/` (untrusted): grouped by
source, and a source whose entries are broken (or name a host that does not resolve) drops."""

import ipaddress

from qubes_lab.qubes_firewall.resolve import Resolved, unresolved_sources
from qubes_lab.qubes_firewall.worker import ReadEntries, dsthost_names, read_entries

WORK = "10.137.0.6"


def read(values: dict[str, str]) -> ReadEntries:
    return read_entries({k: v.encode() for k, v in values.items()})


def test_firewall_entries_are_grouped_by_source() -> None:
    found = read(
        {
            f"/qubes-firewall/{WORK}/policy": "drop",
            f"/qubes-firewall/{WORK}/0000": "action=accept dsthost=server.lab.test proto=tcp",
            f"/qubes-firewall/{WORK}/0001": "action=accept specialtarget=dns",
            "/qubes-firewall/10.137.0.7": "",
            "/qubes-firewall/10.137.0.7/policy": "accept",
        }
    )
    assert [str(f.address) for f in found.entries] == [WORK, "10.137.0.7"]
    assert found.broken == {}
    assert dsthost_names(found.entries) == {"server.lab.test": {4}}


def test_a_broken_firewall_entry_blocks_its_source() -> None:
    found = read(
        {
            f"/qubes-firewall/{WORK}/policy": "accept",
            f"/qubes-firewall/{WORK}/0000": "action=accept proto=tcp dstports=99999",
            "/qubes-firewall/10.137.0.7/policy": "accept",
        }
    )
    assert [str(f.address) for f in found.entries] == ["10.137.0.7"]
    assert list(found.broken) == [ipaddress.ip_address(WORK)]


def test_a_marker_without_policy_blocks_its_source() -> None:
    # As the stock worker: "No 'policy' defined" fails closed.
    found = read({f"/qubes-firewall/{WORK}": "", f"/qubes-firewall/{WORK}/0000": "action=accept"})
    assert found.entries == ()
    assert "policy" in found.broken[ipaddress.ip_address(WORK)]


def test_a_name_that_does_not_resolve_blocks_that_source_only() -> None:
    found = read(
        {
            f"/qubes-firewall/{WORK}/policy": "drop",
            f"/qubes-firewall/{WORK}/0000": "action=accept dsthost=nowhere.lab.test",
            "/qubes-firewall/10.137.0.7/policy": "accept",
        }
    )
    resolved = Resolved({}, {("nowhere.lab.test", 4): "failed to resolve nowhere.lab.test"})
    by_source = {e.address: {"nowhere.lab.test"} for e in found.entries if str(e.address) == WORK}
    reasons = unresolved_sources(by_source, resolved)
    assert list(reasons) == [ipaddress.ip_address(WORK)]
    assert "nowhere.lab.test" in reasons[ipaddress.ip_address(WORK)]


def test_a_source_address_written_in_a_non_canonical_form_is_blocked() -> None:
    untrusted_address = "fd09:24ef:4179:0:0:0:a89:6"
    found = read(
        {
            f"/qubes-firewall/{untrusted_address}/policy": "accept",
            "/qubes-firewall/fe80::1%eth0/policy": "accept",
        }
    )
    assert found.entries == ()
    assert sorted(str(a) for a in found.broken) == ["fd09:24ef:4179::a89:6", "fe80::1"]
