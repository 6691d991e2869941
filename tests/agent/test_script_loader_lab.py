"""The loader against the real kernel: small changes go in place, and a change bigger than
the new script loads whole; either way the ruleset of ours is what loading it whole leaves."""

import asyncio
import ipaddress
import itertools
from collections.abc import Callable

import pytest

from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.agent.nft_port import NftResult
from qubes_portfwd.agent.nft_runner import NftRunner
from qubes_portfwd.agent.script_loader import ScriptLoader
from qubes_portfwd.model.entries import Hop
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.delta import delta_script, split_script
from qubes_portfwd.nft.owned import OwnedJumps, parse_owned_jumps
from tests.nft.helpers import dnat
from tests.nft.lab import make_netns, nft
from tests.nft.test_delta_lab import ours

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

OUTSIDE = {"eth0": (ipaddress.ip_address("192.0.2.2"),)}


class RecordingRunner(NftRunner):
    """The `nft` process in the namespace, remembering each script it was given."""

    def __init__(self, ns: str) -> None:
        super().__init__(("ip", "netns", "exec", ns))
        self.applied: list[str] = []

    async def apply(self, script: str) -> NftResult:
        self.applied.append(script)
        return await super().apply(script)


def forwards(count: int) -> list[Hop]:
    return [dnat(f"{n:012x}", ports=f"{2000 + n}-{2000 + n}") for n in range(count)]


def load(loader: ScriptLoader, ns: str, hops: list[Hop]) -> str:
    owned: OwnedJumps = parse_owned_jumps(nft(ns, "-j", "list", "ruleset"))
    script = compile_qube(QubeRules(hops=tuple(hops), interface_addresses=OUTSIDE), owned).script
    result = asyncio.run(loader.load(script, owned))
    assert result.ok, result.output
    return script


def test_small_changes_in_place_and_a_large_removal_whole(
    make_netns: Callable[[], str],
) -> None:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    runner = RecordingRunner(ns)
    loader = ScriptLoader(runner)
    many = forwards(300)
    first = load(loader, ns, many)
    assert runner.applied == [first]  # nothing loaded before: whole

    one_more = load(loader, ns, [*many, *forwards(301)[300:]])
    assert len(runner.applied) == 2 and len(runner.applied[-1]) < len(one_more) // 10
    in_place = ours(ns)

    reference = make_netns()
    nft(reference, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    load(ScriptLoader(RecordingRunner(reference)), reference, [*many, *forwards(301)[300:]])
    assert in_place == ours(reference)

    nearly_none = load(loader, ns, forwards(1))
    assert runner.applied[-1] == nearly_none  # deleting 300 in place is longer: whole
    load(ScriptLoader(RecordingRunner(reference)), reference, forwards(1))
    assert ours(ns) == ours(reference)


@pytest.mark.parametrize("keep_parts_up_to", [0, 1 << 20], ids=["text-only", "parts-kept"])
def test_changes_in_a_row_go_in_place_whether_or_not_the_split_is_kept(
    make_netns: Callable[[], str], monkeypatch: pytest.MonkeyPatch, keep_parts_up_to: int
) -> None:
    """The loader keeps the last load's parts when small; each change must be the same
    in-place transaction as from the text split again, and leave the kernel as a whole load."""
    monkeypatch.setattr("qubes_portfwd.agent.script_loader.KEEP_PARTS_UP_TO", keep_parts_up_to)
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    runner = RecordingRunner(ns)
    loader = ScriptLoader(runner)
    steps = [forwards(20), forwards(21), forwards(19), [*forwards(19), *forwards(25)[22:]]]
    scripts = [load(loader, ns, hops) for hops in steps]
    expected_deltas = [
        delta_script(split_script(old), split_script(new))
        for old, new in itertools.pairwise(scripts)
    ]
    assert runner.applied == [scripts[0], *expected_deltas]
    assert (loader._loaded_parts is not None) == (keep_parts_up_to > 0)

    reference = make_netns()
    nft(reference, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    load(ScriptLoader(RecordingRunner(reference)), reference, steps[-1])
    assert ours(ns) == ours(reference)
