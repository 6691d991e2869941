"""What the agent removes when it stops: its own objects, never Qubes' or the worker's."""

import json

import pytest

from qubes_portfwd.agent.removal import removal_script
from qubes_portfwd.model.errors import ValidationError


def _ruleset(*objects: dict) -> str:
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, *objects]})


def _table(family: str, name: str) -> dict:
    return {"table": {"family": family, "name": name, "handle": 1}}


def _chain(family: str, table: str, name: str) -> dict:
    return {"chain": {"family": family, "table": table, "name": name, "handle": 2}}


def _rule(family: str, table: str, chain: str, handle: int, comment: str | None = None) -> dict:
    rule = {"family": family, "table": table, "chain": chain, "handle": handle, "expr": []}
    if comment is not None:
        rule["comment"] = comment
    return {"rule": rule}


QUBES = [
    _table("ip", "qubes"),
    *(_chain("ip", "qubes", c) for c in ("input", "forward", "custom-input", "custom-forward")),
    _rule("ip", "qubes", "input", 10),
    _table("ip", "qubes-firewall"),
    _chain("ip", "qubes-firewall", "forward"),
    _chain("ip", "qubes-firewall", "qbs-10-137-0-5"),
    _rule("ip", "qubes-firewall", "qbs-10-137-0-5", 11),
    {"set": {"family": "ip", "table": "qubes", "name": "downstream", "handle": 3}},
]
OURS = [
    _table("ip", "qubes-portfwd"),
    _table("ip6", "qubes-portfwd"),
    _chain("ip", "qubes", "portfwd-forward"),
    _chain("ip", "qubes", "portfwd-input"),
    {"set": {"family": "ip", "table": "qubes", "name": "portfwd-input-allowed", "handle": 4}},
    {"map": {"family": "ip", "table": "qubes", "name": "portfwd-x", "handle": 5}},
    _rule("ip", "qubes", "custom-forward", 21, "qubes-portfwd"),
    _rule("ip", "qubes", "custom-input", 22, "qubes-portfwd"),
]


def test_everything_of_ours_goes_in_an_order_nft_accepts() -> None:
    script = removal_script(_ruleset(*QUBES, *OURS)).splitlines()

    assert script == [
        "delete rule ip qubes custom-forward handle 21",
        "delete rule ip qubes custom-input handle 22",
        "delete table ip qubes-portfwd",
        "delete table ip6 qubes-portfwd",
        "flush chain ip qubes portfwd-forward",
        "flush chain ip qubes portfwd-input",
        "delete chain ip qubes portfwd-forward",
        "delete chain ip qubes portfwd-input",
        "delete set ip qubes portfwd-input-allowed",
        "delete map ip qubes portfwd-x",
    ]


def test_nothing_of_ours_means_no_script() -> None:
    assert removal_script(_ruleset(*QUBES)) == ""


def test_a_user_rule_in_a_custom_chain_and_names_elsewhere_stay() -> None:
    others = [
        _rule("ip", "qubes", "custom-input", 30, "mine"),
        _rule("ip", "qubes", "custom-input", 31, "qubes-portfwd-natd"),  # natd's, not ours
        _chain("ip", "qubes", "natd-input"),
        _chain("ip", "qubes-firewall", "portfwd-lookalike"),
        _table("inet", "qubes-portfwd"),  # not a family our agent writes
        _chain("ip", "qubes", 'portfwd-"; flush ruleset'),  # never quoted into the script
    ]
    assert removal_script(_ruleset(*QUBES, *others)) == ""


def test_a_listing_that_is_not_nfts_is_refused() -> None:
    with pytest.raises(ValidationError):
        removal_script("not json")
