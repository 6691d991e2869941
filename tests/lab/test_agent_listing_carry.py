"""The agent's listing of Qubes' custom chains is carried over its own in-place loads: the
next apply uses it without listing again, and finds exactly what a fresh listing shows. A
whole load, or anyone else's commit, makes it list again.

The agent runs in a process of its own inside the test's namespace (`netns` of
test_agent_service), applying one generation at a time from a store of the test's own.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_agent_service import DNAT, DNAT_KEY, STATIC, netns  # noqa: F401 (netns: fixture)

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]  # the child imports tests.agent.counting_nft

# Each step: optional commit of someone else (an nft script), then the entries to apply. Prints,
# per step, the listings the apply made, whether it applied, and whether the listing it used
# equals one taken fresh just before (by another handle, not counted).
CHILD = """
import asyncio, json, subprocess, sys
from qubes_lab.entry_store import EntryStore
from qubes_lab.qube_db import FileQubeDb
from qubes_portfwd.agent.nft_library import NftLibrary
from tests.agent.counting_nft import CountingNft
from qubes_portfwd.agent.nft_netlink import NetlinkBatches
from qubes_portfwd.agent.service import Agent

async def main(store_path, steps):
    store, runner, fresh = EntryStore(store_path), CountingNft(), NftLibrary()
    agent = Agent(FileQubeDb(store_path), runner, batches=NetlinkBatches())
    used = []
    listing = agent.chains.listing

    async def recorded():
        result = await listing()
        used.append(result.output)
        return result

    agent.chains.listing = recorded
    seen = []
    for other, entries in steps:
        if other:
            subprocess.run(["nft", "-f", "-"], input=other, text=True, check=True, timeout=30)
        store.replace_except((), entries)
        expected = (await fresh.list_custom_chains_json()).output
        before = runner.listings
        outcome = await agent.apply_current()
        seen.append({
            "listed": runner.listings - before,
            "ok": outcome.ok,
            "same": used[-1] == expected,
        })
    runner.close()
    fresh.close()
    print(json.dumps(seen))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""

OTHER_DNAT_KEY = DNAT_KEY.replace("0123456789ab", "0123456789ac")
OTHER_DNAT = DNAT.replace("ports=80-80", "ports=81-81")
THIRD_DNAT_KEY = DNAT_KEY.replace("0123456789ab", "0123456789ad")
THIRD_DNAT = DNAT.replace("ports=80-80", "ports=82-82")
# Whatever else they hold, Qubes' custom chains lose our jumps: the agent loads whole.
JUMPS_GONE = "flush chain ip qubes custom-input\nflush chain ip qubes custom-forward\n"


def test_the_listing_is_carried_over_in_place_loads_only(
    netns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    static = dict(STATIC)
    one = {**static, DNAT_KEY: DNAT}
    two = {**one, OTHER_DNAT_KEY: OTHER_DNAT}
    three = {**two, THIRD_DNAT_KEY: THIRD_DNAT}
    someone_else = 'add rule ip qubes custom-input counter comment "qpt"\n'
    steps = [
        (None, one),  # first load, whole: listed before it and after it
        (None, two),  # in place: neither
        (None, one),  # in place: the carried listing used
        (someone_else, three),  # listed before (someone committed), carried after
        (None, two),  # in place again: carried
        (JUMPS_GONE, three),  # listed before, and after the whole load it needs
        (None, two),  # the listing made after that whole load is used
    ]
    store = tmp_path / "store"
    argv = [
        "ip", "netns", "exec", netns, sys.executable, "-c", CHILD, str(store), json.dumps(steps),
    ]  # fmt: skip
    child = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout.splitlines()[-1])
    assert all(step["ok"] for step in seen), seen
    assert all(step["same"] for step in seen), seen
    assert [step["listed"] for step in seen] == [2, 0, 0, 1, 0, 2, 0], seen
