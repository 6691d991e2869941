"""Qubes' custom chains listed ahead, in a namespace of the test's own: the listing is reused
while nobody committed since, and listed again after anyone's transaction."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qubes_lab.qubes_base import BaseParams, base_ruleset
from tests.nft.lab import make_netns, nft

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]  # the child imports tests.agent.counting_nft

CHILD = """
import asyncio, json, subprocess
from qubes_portfwd.agent.custom_chains import CustomChains
from tests.agent.counting_nft import CountingNft

def someone_else(*argv):
    subprocess.run(["nft", *argv], check=True, timeout=30)

async def main():
    runner = CountingNft()
    chains = CustomChains(runner)
    seen = []
    async def step(what):
        before = runner.listings
        result = await chains.listing()
        seen.append({"what": what, "listed": runner.listings - before, "ok": result.ok,
                     "has_rule": "qpt-mark" in result.output})
    await step("nothing kept")
    await chains.list_ahead()
    await step("kept, nothing since")
    await step("kept listing used once")
    await chains.list_ahead()
    someone_else("add", "rule", "ip", "qubes", "custom-input", "counter", "comment", "qpt-mark")
    await step("someone else committed since")
    await chains.list_ahead()
    someone_else("add", "table", "ip", "qpt-elsewhere")
    await step("any transaction, anywhere")
    runner.close()
    print(json.dumps(seen))

asyncio.run(main())
"""


def test_the_listing_ahead_is_used_only_while_nobody_committed(
    make_netns: Callable[[], str],
) -> None:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD]
    child = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert child.returncode == 0, child.stderr
    seen = {s.pop("what"): s for s in json.loads(child.stdout)}
    assert seen["nothing kept"] == {"listed": 1, "ok": True, "has_rule": False}
    assert seen["kept, nothing since"] == {"listed": 0, "ok": True, "has_rule": False}
    assert seen["kept listing used once"]["listed"] == 1
    assert seen["someone else committed since"] == {"listed": 1, "ok": True, "has_rule": True}
    assert seen["any transaction, anywhere"]["listed"] == 1
