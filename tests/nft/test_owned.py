"""Reading our jump rules out of `nft -j list ruleset`."""

import json

import pytest

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.nft.owned import OwnedJump, parse_owned_jumps


def listing(*items: dict[str, object]) -> str:
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, *items]})


def chain(family: str, table: str, name: str) -> dict[str, object]:
    return {"chain": {"family": family, "table": table, "name": name, "handle": 1}}


def rule(family: str, chain_name: str, handle: object, comment: str | None) -> dict[str, object]:
    body: dict[str, object] = {
        "family": family,
        "table": "qubes",
        "chain": chain_name,
        "handle": handle,
        "expr": [{"jump": {"target": "portfwd-forward"}}],
    }
    if comment is not None:
        body["comment"] = comment
    return {"rule": body}


BASE_V4 = (chain("ip", "qubes", "custom-input"), chain("ip", "qubes", "custom-forward"))


def test_finds_only_rules_marked_as_ours_in_custom_chains() -> None:
    owned = parse_owned_jumps(
        listing(
            *BASE_V4,
            rule("ip", "custom-forward", 7, "qubes-portfwd"),
            rule("ip", "custom-forward", 8, "a user's rule"),
            rule("ip", "custom-input", 9, None),
            rule("ip", "forward", 10, "qubes-portfwd"),  # not a chain we add to
            rule("ip", "custom-input", 11, "qubes-portfwd"),
        )
    )
    assert owned.jumps == (OwnedJump(4, "custom-forward", 7), OwnedJump(4, "custom-input", 11))
    assert owned.base_families == frozenset({4})


def test_a_family_counts_as_based_only_with_both_custom_chains() -> None:
    owned = parse_owned_jumps(listing(*BASE_V4, chain("ip6", "qubes", "custom-input")))
    assert owned.base_families == frozenset({4})
    assert parse_owned_jumps(listing()).base_families == frozenset()


@pytest.mark.parametrize("untrusted", ["", "[]", '{"nftables": 3}', "{"])
def test_refuses_what_is_not_a_listing(untrusted: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_owned_jumps(untrusted)
    assert err.value.field == "ruleset"


@pytest.mark.parametrize("handle", [0, -1, "7", 7.0, True])
def test_refuses_a_bad_handle_on_our_rule(handle: object) -> None:
    with pytest.raises(ValidationError) as err:
        parse_owned_jumps(listing(*BASE_V4, rule("ip", "custom-input", handle, "qubes-portfwd")))
    assert err.value.field == "handle"
