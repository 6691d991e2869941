"""The outbound rule limit that the lab's qubesd and its qubes-firewall worker share: Qubes'
four-digit rule numbers."""

import pytest

from admin_service import RunningService
from qubes_lab.qubes_firewall.entries import MAX_FIREWALL_RULES
from qubes_lab.qubes_firewall.worker import read_entries
from qubes_portfwd.client import QubesdError


def _rules(count: int) -> list[str]:
    return [f"action=accept dst4=10.{n // 250}.{n % 250}.1/32 proto=tcp" for n in range(count)]


def test_as_many_rules_as_qubes_numbers_reach_the_agent_whole(service: RunningService) -> None:
    client = service.client()
    client.firewall_set("work", _rules(MAX_FIREWALL_RULES))
    _, entries = service.store("sys-firewall").read()
    found = read_entries({k: v.encode() for k, v in entries.items() if k.startswith("/qubes-f")})
    assert not found.broken, found.broken
    [work4] = [f for f in found.entries if str(f.address) == "10.137.0.6"]
    assert len(work4.rules) == MAX_FIREWALL_RULES


def test_one_rule_more_is_refused_and_nothing_changes(service: RunningService) -> None:
    client = service.client()
    client.firewall_set("work", _rules(3))
    with pytest.raises(QubesdError) as refused:
        client.firewall_set("work", _rules(MAX_FIREWALL_RULES + 1))
    assert refused.value.message == (
        "rules: 10001 accept/drop rules; at most 10000 per qube (Qubes numbers them with four"
        " digits)"
    )
    assert client.firewall_get("work") == _rules(3)


def test_the_worker_refuses_more_than_qubes_numbers() -> None:
    base = "/qubes-firewall/10.137.0.6/"
    entries = {f"{base}policy": "drop"}
    entries |= {f"{base}{n:04}": "action=accept proto=tcp" for n in range(MAX_FIREWALL_RULES)}
    entries[f"{base}{MAX_FIREWALL_RULES}"] = "action=accept proto=udp"
    found = read_entries({k: v.encode() for k, v in entries.items()})
    assert [str(a) for a in found.broken] == ["10.137.0.6"]
    assert "at most 10000 (0000-9999)" in found.broken[next(iter(found.broken))]
