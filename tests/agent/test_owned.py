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
