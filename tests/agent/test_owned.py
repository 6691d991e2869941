"""The owned-rules fingerprint notices lost rules and nothing else."""

import json

from qubes_portfwd.agent.owned import owned_fingerprint


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
