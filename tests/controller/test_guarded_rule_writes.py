"""Guarded rule-list writes: interleavings of two writers step by step, through the service."""

import secrets
import time

import pytest

from admin_service import RunningService
from qubes_portfwd.client import QubesdError
from qubes_portfwd.client.guarded_update import update_rules
from qubes_portfwd.controller.firewall_guard import stale_guards
from qubes_portfwd.model.firewall_revision import (
    FEATURE_PREFIX,
    STALE_AFTER,
    BaseRevision,
    digest,
    feature_name,
    rules_text,
)

RULE_A = "action=accept dst4=198.51.100.1/32 proto=tcp dstports=443-443"
RULE_B = "action=accept dst4=198.51.100.2/32 proto=tcp dstports=443-443"
RULE_C = "action=drop dst4=198.51.100.3/32"


def _guard(
    service: RunningService, read: list[str], new: list[str], at: float | None = None
) -> str:
    """A guard as one writer sets it; its feature name."""
    revision = BaseRevision(digest(rules_text(read)), time.time() if at is None else at)
    name = feature_name(rules_text(new), secrets.token_hex(4))
    service.client().set_feature("work", name, revision.format())
    return name


def test_a_write_from_a_stale_read_is_refused_and_changes_nothing(service: RunningService) -> None:
    client = service.client()
    read = client.firewall_get("work")
    # Writer 1 and writer 2 read the same list; writer 1 stores first.
    _guard(service, read, [*read, RULE_A])
    _guard(service, read, [*read, RULE_B])
    client.firewall_set("work", [*read, RULE_A])
    with pytest.raises(QubesdError) as refused:
        client.firewall_set("work", [*read, RULE_B])
    assert refused.value.exc_type == "PortfwdRulesChanged"
    assert "changed since it was read" in refused.value.message
    assert client.firewall_get("work") == [*read, RULE_A]


def test_two_writers_computing_the_same_list_cannot_undo_a_third(
    service: RunningService,
) -> None:
    """The second identical Set after a third writer's change is refused: guards are per writer."""
    client = service.client()
    read = client.firewall_get("work")
    first = _guard(service, read, [*read, RULE_A])
    _guard(service, read, [*read, RULE_A])
    client.firewall_set("work", [*read, RULE_A])
    client.remove_feature("work", first)
    third_read = client.firewall_get("work")
    third = _guard(service, third_read, [*third_read, RULE_C])
    client.firewall_set("work", [*third_read, RULE_C])
    client.remove_feature("work", third)
    with pytest.raises(QubesdError):
        client.firewall_set("work", [*read, RULE_A])
    assert client.firewall_get("work") == [*read, RULE_A, RULE_C]


def test_a_stock_write_of_a_list_a_finished_writer_sent_is_not_refused(
    service: RunningService,
) -> None:
    """Guards live only while their writer works: a later unguarded Set is plain stock."""
    client = service.client()
    read = client.firewall_get("work")
    update_rules(client, "work", lambda lines: [*lines, RULE_A])
    update_rules(client, "work", lambda lines: [line for line in lines if line != RULE_A])
    client.firewall_set("work", [RULE_B])
    client.firewall_set("work", read)  # the very list the second writer sent
    assert client.firewall_get("work") == read
    assert not [f for f in client.list_features("work") if f.startswith(FEATURE_PREFIX)]


def test_unguarded_sets_keep_stock_behaviour(service: RunningService) -> None:
    client = service.client()
    client.firewall_set("work", [RULE_A])
    client.firewall_set("work", [RULE_B])
    assert client.firewall_get("work") == [RULE_B]


def test_update_rules_reads_again_after_a_concurrent_change(service: RunningService) -> None:
    client = service.client()
    calls: list[list[str]] = []

    def edit(lines: list[str]) -> list[str]:
        calls.append(lines)
        if len(calls) == 1:  # someone else changes the list between our read and our Set
            other = client.firewall_get("work")
            _guard(service, other, [*other, RULE_B])
            client.firewall_set("work", [*other, RULE_B])
        return [*lines, RULE_A]

    stored = update_rules(client, "work", edit)
    assert len(calls) == 2 and RULE_B in calls[1]
    assert client.firewall_get("work") == stored and stored[-2:] == [RULE_B, RULE_A]


def test_stale_guards_are_the_old_or_unreadable_ones() -> None:
    now = 1_000_000.0
    fresh = BaseRevision(digest("a\n"), now - 1).format()
    old = BaseRevision(digest("a\n"), now - STALE_AFTER - 1).format()
    features = {
        "ipv6": "1",
        feature_name("fresh", "1"): fresh,
        feature_name("old", "2"): old,
        feature_name("junk", "3"): "junk",
    }
    assert sorted(stale_guards(features, now)) == sorted(
        [feature_name("old", "2"), feature_name("junk", "3")]
    )


def test_a_guard_set_late_is_dropped_at_once(service: RunningService) -> None:
    client = service.client()
    read = client.firewall_get("work")
    _guard(service, read, [*read, RULE_C], at=time.time() - STALE_AFTER - 10)
    assert not [f for f in client.list_features("work") if f.startswith(FEATURE_PREFIX)]


def test_a_malformed_guard_is_refused(service: RunningService) -> None:
    client = service.client()
    with pytest.raises(QubesdError) as bad:
        client.set_feature("work", feature_name("x", "1"), "not a revision")
    assert bad.value.message.startswith("portfwd-firewall-base: expected")
    assert feature_name("x", "1") not in client.list_features("work")
