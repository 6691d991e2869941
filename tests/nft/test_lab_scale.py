"""Real nft: compiled scripts for 1, 100 and 10,000 forwards over Qubes' base tables."""

import ipaddress

import pytest

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import parse_owned_jumps

from .helpers import accept, many_forwards
from .lab import nft, rule_counts

pytestmark = pytest.mark.lab

NETVM = BaseParams(
    provides_network=True,
    ipv6=True,
    downstream=(
        Downstream("vif5.0", ipaddress.IPv4Address("10.137.0.5"), ipaddress.IPv6Address("fd09::5")),
    ),
)
BASE_CHAINS = ("prerouting", "antispoof", "postrouting", "input", "forward", "dnat-dns")


def system(count: int) -> QubeRules:
    hops = (
        *many_forwards(count),
        *(accept(f"{n:012x}", ports=f"{n + 1}-{n + 1}") for n in range(5)),
    )
    return QubeRules(hops=hops)


def apply(ns: str, rules: QubeRules) -> str:
    compiled = compile_qube(rules, parse_owned_jumps(nft(ns, "-j", "list", "ruleset")))
    assert compiled.skipped == ()
    nft(ns, "-c", "-f", "-", stdin=compiled.script)
    nft(ns, "-f", "-", stdin=compiled.script)
    return compiled.script


@pytest.mark.parametrize("count", [1, 100, 10_000])
def test_script_checks_applies_and_reapplies_to_the_same_state(make_netns, count: int) -> None:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(NETVM))
    base_before = {c: nft(ns, "list", "chain", "ip", "qubes", c) for c in BASE_CHAINS}
    rules = system(count)
    apply(ns, rules)
    first = nft(ns, "list", "ruleset")
    apply(ns, rules)
    assert nft(ns, "list", "ruleset") == first
    for family in ("ip", "ip6"):
        for custom in ("custom-input", "custom-forward"):
            listed = nft(ns, "list", "chain", family, "qubes", custom)
            assert listed.count('comment "qubes-portfwd"') == 1, listed
    assert {c: nft(ns, "list", "chain", "ip", "qubes", c) for c in BASE_CHAINS} == base_before
    assert first.count("chain fwd-") == count


def test_user_rules_in_custom_chains_survive(make_netns) -> None:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(NETVM))
    nft(ns, "add", "rule", "ip", "qubes", "custom-forward", "tcp", "dport", "25", "drop")
    apply(ns, system(3))
    apply(ns, system(2))
    listed = nft(ns, "list", "chain", "ip", "qubes", "custom-forward")
    assert "tcp dport 25 drop" in listed
    assert listed.count("jump portfwd-forward") == 1


def test_rules_a_packet_walks_do_not_depend_on_the_forward_count(make_netns) -> None:
    """Every chain but the per-forward ones keeps its rule count from 1 to 10,000 forwards;
    a per-forward chain is reached only through a map and holds one rule."""
    counts = {}
    for count in (1, 10_000):
        ns = make_netns()
        nft(ns, "-f", "-", stdin=base_ruleset(NETVM))
        script = apply(ns, system(count))
        counts[count] = rule_counts(ns)
        assert script.count("jump fwd-") == 0
        for line in script.splitlines():
            if "goto fwd-" in line:
                assert " : goto fwd-" in line  # only as a map element, never as a rule
    shared = {k: v for k, v in counts[1].items() if " fwd-" not in k}
    assert shared == {k: v for k, v in counts[10_000].items() if " fwd-" not in k}
    per_forward = [v for k, v in counts[10_000].items() if " fwd-" in k]
    assert len(per_forward) == 10_000
    assert set(per_forward) == {1}
