"""The agent loads without hearing its own load, in a namespace of the test's own: nothing of
it reaches the agent's notification socket, and a transaction someone else commits while the
agent is not listening still counts as announced (the ruleset generation tells)."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qubes_lab.qubes_base import BaseParams, base_ruleset
from tests.bench.conftest import REPO_ROOT
from tests.nft.lab import make_netns, nft

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

CHILD = """
import asyncio, ipaddress, json, subprocess, sys
sys.path.insert(0, sys.argv[2])
from qubes_lab.qube_db import FileQubeDb
from qubes_portfwd.agent.nft_library import NftLibrary
from qubes_portfwd.agent.service import Agent
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import parse_owned_jumps
from tests.nft.helpers import dnat

OUTSIDE = {"eth0": (ipaddress.ip_address("192.0.2.2"),)}

class SomeoneElseMidway(NftLibrary):
    foreign = False
    resubscribe = None  # the agent's KernelWatch, to subscribe anew while the load runs

    async def apply(self, script):
        if self.foreign:  # another task commits while the agent's load is under way
            subprocess.run(["nft", "add", "table", "ip", "qpt-else"], check=True, timeout=30)
        if self.resubscribe is not None:  # as the watcher does after a failed read
            self.resubscribe._ruleset_events.close()
            self.resubscribe._ruleset_events = None
            self.resubscribe.subscribe_ruleset()
        return await super().apply(script)

def queued(events):
    count = 0
    while True:
        try:
            events._sock.recv(1 << 16)
        except BlockingIOError:
            return count
        count += 1

async def main():
    runner = SomeoneElseMidway()
    agent = Agent(FileQubeDb(sys.argv[1]), runner)
    events = agent.kernel.subscribe_ruleset()
    outcomes = []
    cases = ((1, "unheard"), (2, "unheard, someone else midway"), (3, "heard"),
             (4, "unheard, subscribed anew midway"))
    for count, how in cases:
        runner.foreign = "someone" in how
        runner.resubscribe = agent.kernel if "anew" in how else None
        owned = parse_owned_jumps((await runner.list_ruleset_json()).output)
        hops = tuple(dnat(f"{n:012x}", ports=f"{2000 + n}-{2000 + n}") for n in range(count))
        script = compile_qube(QubeRules(hops=hops, interface_addresses=OUTSIDE), owned).script
        if how == "heard":
            result = await runner.apply(script)
        else:
            result = await agent.kernel.load_unheard(agent.loader, script, owned)
        events = agent.kernel._ruleset_events  # the one made midway, in the last case
        outcomes.append({"how": how, "ok": result.ok, "queued": queued(events),
                         "flagged": agent.kernel.ruleset_changed.is_set(),
                         "timed": agent.kernel.unannounced})
        agent.kernel.ruleset_changed.clear()
    events.close()
    runner.close()
    print(json.dumps(outcomes))

asyncio.run(main())
"""


def test_the_agent_does_not_hear_its_load_and_still_learns_of_others_meanwhile(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD, str(tmp_path), REPO_ROOT]
    child = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == 0, child.stderr
    outcomes = {o.pop("how"): o for o in json.loads(child.stdout)}
    assert outcomes["unheard"] == {"ok": True, "queued": 0, "flagged": False, "timed": False}
    # Not heard either, but the generation moved by one more than the agent committed.
    midway = {"ok": True, "queued": 0, "flagged": True, "timed": False}
    assert outcomes["unheard, someone else midway"] == midway
    # The same kind of load, listened to: the kernel sends it (what the agent no longer reads).
    heard = outcomes["heard"]
    assert heard["ok"] and heard["queued"] > 0 and not heard["flagged"]
    # The watcher subscribed anew during the load: the new subscription heard it (as ours,
    # by its committer), and the agent keeps listening rather than falling back to a timer.
    anew = outcomes["unheard, subscribed anew midway"]
    assert anew["ok"] and anew["queued"] > 0 and not anew["flagged"] and not anew["timed"]
