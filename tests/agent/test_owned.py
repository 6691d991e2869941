"""The owned-rules fingerprint notices lost rules and nothing else; a notified change is
weighed by what it touched."""

import json

import pytest

from qubes_portfwd.agent.owned import HOOKS, OURS, UNRELATED, change_weight, owned_fingerprint
from qubes_portfwd.netlink.transactions import (
    NFT_MSG_DELCHAIN,
    NFT_MSG_DELRULE,
    NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSETELEM,
    NFT_MSG_NEWTABLE,
    ObjectChange,
)


def _ruleset(*objects: dict) -> str:
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, *objects]})


JUMP = {
    "rule": {
        "family": "ip",
        "table": "qubes",
        "chain": "custom-forward",
        "handle": 7,
        "comment": "qubes-portfwd",
        "expr": [{"jump": {"target": "portfwd-forward"}}],
    }
}
OWN_TABLE = {"table": {"family": "ip", "name": "qubes-portfwd", "handle": 3}}
OWN_RULE = {
    "rule": {
        "family": "ip",
        "table": "qubes-portfwd",
        "chain": "prerouting",
        "handle": 4,
        "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"accept": None}],
    }
}
QUBES_RULE = {"rule": {"family": "ip", "table": "qubes", "chain": "input", "handle": 2, "expr": []}}


def test_handles_counters_and_unowned_rules_do_not_matter() -> None:
    before = owned_fingerprint(_ruleset(OWN_TABLE, OWN_RULE, JUMP))
    moved = json.loads(json.dumps([OWN_TABLE, OWN_RULE, JUMP]))
    moved[0]["table"]["handle"] = 9
    moved[1]["rule"]["expr"][0]["counter"] = {"packets": 5, "bytes": 900}
    moved[2]["rule"]["handle"] = 99
    assert owned_fingerprint(_ruleset(*moved, QUBES_RULE)) == before


def test_a_lost_jump_or_flushed_chain_changes_the_fingerprint() -> None:
    whole = owned_fingerprint(_ruleset(OWN_TABLE, OWN_RULE, JUMP))
    assert owned_fingerprint(_ruleset(OWN_TABLE, OWN_RULE)) != whole
    assert owned_fingerprint(_ruleset(OWN_TABLE, JUMP)) != whole
    assert owned_fingerprint(_ruleset(JUMP)) != whole


def _listing(*objects: dict) -> str:
    return json.dumps({"nftables": list(objects)})


def test_the_order_objects_were_made_in_does_not_matter_but_rule_order_does() -> None:
    """In-place loads make chains and elements in another order than a whole load."""
    table = {"table": {"family": "ip", "name": "qubes-portfwd"}}
    early = {"chain": {"family": "ip", "table": "qubes-portfwd", "name": "postrouting"}}
    late = {"chain": {"family": "ip", "table": "qubes-portfwd", "name": "fwd-aaaaaaaaaaaa"}}
    one = {"rule": {"family": "ip", "table": "qubes-portfwd", "chain": "dispatch", "expr": [1]}}
    two = {"rule": {"family": "ip", "table": "qubes-portfwd", "chain": "dispatch", "expr": [2]}}

    def elements(*values: str) -> dict:
        return {"map": {"family": "ip", "table": "qubes-portfwd", "name": "m", "elem": values}}

    made_whole = _listing(table, late, early, elements("a", "b"), one, two)
    made_in_place = _listing(table, early, late, elements("b", "a"), one, two)
    assert owned_fingerprint(made_whole) == owned_fingerprint(made_in_place)
    swapped = _listing(table, early, late, elements("a", "b"), two, one)
    assert owned_fingerprint(swapped) != owned_fingerprint(made_whole)


@pytest.mark.parametrize(
    ("message", "table", "name", "weight"),
    [
        # Ours: our table, and our chains, sets and their elements inside Qubes' table.
        (NFT_MSG_NEWSETELEM, "qubes-portfwd", "dnat-any", OURS),
        (NFT_MSG_DELTABLE, "qubes-portfwd", "qubes-portfwd", OURS),
        (NFT_MSG_DELCHAIN, "qubes", "portfwd-input", OURS),
        (NFT_MSG_DELRULE, "qubes", "fwd-0123456789ab-4", OURS),
        (NFT_MSG_DELSETELEM, "qubes", "portfwd-accept-any", OURS),
        # Qubes' table itself and the chains holding our jumps: look at the jumps.
        (NFT_MSG_DELTABLE, "qubes", "qubes", HOOKS),
        (NFT_MSG_NEWTABLE, "qubes", "qubes", HOOKS),
        (NFT_MSG_NEWCHAIN, "qubes", "custom-input", HOOKS),
        (NFT_MSG_DELRULE, "qubes", "custom-forward", HOOKS),
        # A rule added beside our jump, Qubes' own sets and chains, others' tables: nothing.
        (NFT_MSG_NEWRULE, "qubes", "custom-input", UNRELATED),
        (NFT_MSG_NEWSETELEM, "qubes", "downstream", UNRELATED),
        (NFT_MSG_DELRULE, "qubes", "forward", UNRELATED),
        (NFT_MSG_DELTABLE, "qubes-firewall", "qubes-firewall", UNRELATED),
        (NFT_MSG_NEWRULE, "qubes-firewall", "qbs-10-137-0-5", UNRELATED),
        # What cannot be named counts as ours.
        (NFT_MSG_NEWRULE, None, None, OURS),
        (NFT_MSG_NEWRULE, "qubes", None, OURS),
    ],
)
def test_someone_elses_change_is_weighed_by_what_it_touched(
    message: int, table: str | None, name: str | None, weight: int
) -> None:
    assert change_weight(ObjectChange(message, 2, table, name)) == weight
