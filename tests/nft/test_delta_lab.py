"""In-place changes against the kernel: after the delta from A to B, the ruleset of ours is
what loading B whole leaves (elements, chains, rules; handles and counters aside)."""

import ipaddress
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.model.entries import Hop
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.delta import delta_script, split_script
from qubes_portfwd.nft.owned import parse_owned_jumps
from tests.strategies import accept_hops, dnat_hops

from .helpers import accept, dnat
from .lab import nft

pytestmark = pytest.mark.lab

OUTSIDE = {"eth0": (ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("2001:db8::2"))}
VOLATILE = frozenset({"handle", "packets", "bytes"})


@pytest.fixture
def edge(make_netns: Callable[[], str]) -> Iterator[str]:
    """A network qube's namespace with Qubes' base rules for both families."""
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, ipv6=True)))
    yield ns


def compiled(ns: str, hops: list[Hop]) -> str:
    owned = parse_owned_jumps(nft(ns, "-j", "list", "ruleset"))
    return compile_qube(QubeRules(hops=tuple(hops), interface_addresses=OUTSIDE), owned).script


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def ours(ns: str) -> list[str]:
    """Our objects, as comparable text: set elements sorted, rules in their chain's order."""
    objects = []
    for item in json.loads(nft(ns, "-j", "list", "ruleset"))["nftables"]:
        ((kind, body),) = item.items()
        if kind == "metainfo":
            continue
        body = _plain(body)
        table = body.get("name") if kind == "table" else body.get("table")
        named = str(body.get("chain") if kind == "rule" else body.get("name", ""))
        mine = table == "qubes-portfwd" or (
            table == "qubes" and (named.startswith("portfwd-") or "qubes-portfwd" in str(body))
        )
        if not mine:
            continue
        if "elem" in body:
            body["elem"] = sorted(body["elem"], key=lambda e: json.dumps(e, sort_keys=True))
        where = (kind, body.get("family"), table, named)
        objects.append((where, json.dumps({kind: body}, sort_keys=True)))
    # Stable: rules keep their order within a chain.
    return [text for _, text in sorted(objects, key=lambda o: o[0])]


def check_delta_matches_whole(ns: str, first: list[Hop], second: list[Hop]) -> str | None:
    nft(ns, "-f", "-", stdin=compiled(ns, first))
    before = split_script(compiled(ns, first))
    whole = compiled(ns, second)
    delta = delta_script(before, split_script(whole))
    if delta is not None:
        if delta:
            nft(ns, "-f", "-", stdin=delta)
        in_place = ours(ns)
        nft(ns, "-f", "-", stdin=compiled(ns, second))
        assert in_place == ours(ns)
    return delta


def test_adding_changing_and_removing_forwards_in_place(edge: str) -> None:
    base = [dnat("000000000001"), accept("000000000002"), dnat("000000000003", ports="81-81")]
    steps = [
        [*base, dnat("000000000004", ports="82-82", to="10.137.0.9")],
        [*base, dnat("000000000004", ports="82-83", toports="92-93", to="10.137.0.9")],
        [base[0], dnat("000000000004", ports="82-83", toports="92-93", to="10.137.0.7")],
        [base[0], accept("000000000005", ports="22-22", srchost="192.0.2.7")],
        [base[0]],
    ]
    previous = base
    for step in steps:
        delta = check_delta_matches_whole(edge, previous, step)
        assert delta, f"expected an in-place change from {previous} to {step}"
        previous = step


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.one_of(dnat_hops(), accept_hops()), max_size=5),
    st.lists(st.one_of(dnat_hops(), accept_hops()), max_size=3),
    st.integers(0, 5),
)
def test_any_change_in_place_ends_as_loading_whole(
    edge: str, kept: list[Hop], added: list[Hop], dropped: int
) -> None:
    check_delta_matches_whole(edge, kept, [*kept[dropped:], *added])
