"""What an agent reports while its kernel lacks its rules: never `applied`.

The agent runs alone in a throwaway namespace (the `netns` fixture of test_agent_service).
To look inside a repair, its calls into nftables can be held at a gate: the agent is composed
as the lab's root composes it, with its libnftables wrapped so that the named call waits
while a file exists. Nothing else about the agent changes.
"""

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_agent_service import (  # noqa: F401 (netns is a fixture)
    DEADLINE,
    DNAT,
    DNAT_KEY,
    STATIC,
    WORK,
    netns,
    nft,
    owned_jumps,
    poll,
)

from qubes_lab.entry_store import EntryStore
from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset

pytestmark = pytest.mark.lab

FORWARD_ID = DNAT_KEY.split("/")[2]
GATE_WAIT_STEPS = 600  # of 0.05 s: a held call gives up waiting after 30 s

# The lab's agent (qubes_lab.roots.agent) with its nftables port wrapped: the call named
# $NFT_GATE_ON (`apply` before the load, `applied` after it) waits while $NFT_GATE exists,
# after touching $NFT_ENTERED; other calls go through at once. With $NO_RULESET_EVENTS the
# kernel refuses the agent its ruleset notifications (as without CAP_NET_ADMIN).
GATED_AGENT = """
import asyncio, os, sys
from pathlib import Path
from qubes_lab.qube_db import FileQubeDb
from qubes_portfwd.agent import kernel_watch
from qubes_portfwd.agent.main import parser, run
from qubes_portfwd.agent.nft_library import NftLibrary

def refused(*args, **kwargs):
    raise PermissionError(1, "Operation not permitted")

if os.environ.get("NO_RULESET_EVENTS"):
    kernel_watch.others_ruleset_events = refused

class GatedNft:
    def __init__(self):
        self.nft = NftLibrary()

    async def _gate(self, call):
        gate = Path(os.environ["NFT_GATE"])
        if call != os.environ["NFT_GATE_ON"] or not gate.exists():
            return
        Path(os.environ["NFT_ENTERED"]).touch()
        for _ in range({steps}):
            if not gate.exists():
                return
            await asyncio.sleep(0.05)

    async def apply(self, script):
        await self._gate("apply")
        result = await self.nft.apply(script)
        await self._gate("applied")
        return result

    async def list_ruleset_json(self):
        return await self.nft.list_ruleset_json()

    async def list_custom_chains_json(self):
        return await self.nft.list_custom_chains_json()

arguments = parser()
arguments.add_argument("--store", required=True)
# No direct netlink commits: every load must pass the gate, which holds libnftables calls.
sys.exit(run(arguments.parse_args(), lambda args: FileQubeDb(args.store), GatedNft, lambda: None))
"""


@contextmanager
def gated_agent(
    namespace: str,
    store: EntryStore,
    tmp_path: Path,
    gate_on: str = "apply",
    closed: bool = False,
    ruleset_events: bool = True,
) -> Iterator[tuple[Path, Path]]:
    """The agent running with a gate on its nftables call `gate_on`, closed from the start
    if `closed`, told of ruleset changes unless not `ruleset_events`; yields (gate, entered)
    file paths."""
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    env = {
        **os.environ,
        "NFT_GATE": str(gate),
        "NFT_ENTERED": str(entered),
        "NFT_GATE_ON": gate_on,
    }
    if not ruleset_events:
        env["NO_RULESET_EVENTS"] = "1"
    if closed:
        gate.touch()
    argv = [
        "ip", "netns", "exec", namespace, sys.executable, "-c",
        GATED_AGENT.replace("{steps}", str(GATE_WAIT_STEPS)),
        "--qube", "sys-firewall", "--store", str(store.path),
    ]  # fmt: skip
    agent = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, text=True)
    try:
        yield gate, entered
    finally:
        gate.unlink(missing_ok=True)
        agent.terminate()
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=10)


def forward_in_kernel(namespace: str) -> bool:
    return FORWARD_ID in nft(namespace, "list", "ruleset")


def test_rules_lost_from_the_kernel_are_reported_repairing_until_they_are_back(
    netns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = EntryStore(tmp_path / "sys-firewall")
    generation = store.set_many({**STATIC, DNAT_KEY: DNAT})
    with gated_agent(netns, store, tmp_path) as (gate, entered):
        assert store.wait_for_handled(generation, DEADLINE).per_key[DNAT_KEY] == "applied"
        assert forward_in_kernel(netns)

        gate.touch()
        nft(netns, "delete", "table", "ip", "qubes-portfwd")
        poll(entered.exists, "the agent re-applying (held at its apply)")
        assert not forward_in_kernel(netns)
        report = store.read_status()
        assert report.per_key[DNAT_KEY] == "repairing", "reported applied, the kernel has none"

        gate.unlink()
        poll(
            lambda: store.read_status().per_key[DNAT_KEY] == "applied" and forward_in_kernel(netns),
            "the forward back and reported applied",
        )
        assert store.read_status().handled == generation


def qubes_table_alone(family: str = "ip") -> str:
    """Qubes' own `qubes` table of the fixture's namespace, as Qubes' firewall service
    creates it, without anything of ours."""
    downstream = Downstream("vif6.0", ipaddress.IPv4Address(WORK))
    params = BaseParams(provides_network=True, downstream=(downstream,))
    lines = base_ruleset(params).splitlines()
    start = lines.index(f"table {family} qubes {{")
    return "\n".join(lines[start : lines.index("}", start) + 1]) + "\n"


def test_a_forward_left_out_for_want_of_qubes_table_applies_once_it_is_back(
    netns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = EntryStore(tmp_path / "sys-firewall")
    generation = store.set_many({**STATIC, DNAT_KEY: DNAT})
    with gated_agent(netns, store, tmp_path):  # never held here
        assert store.wait_for_handled(generation, DEADLINE).per_key[DNAT_KEY] == "applied"

        nft(netns, "delete", "table", "ip", "qubes")
        poll(
            lambda: "base table ip qubes is missing" in store.read_status().per_key[DNAT_KEY],
            "the forward reported left out",
        )
        assert not forward_in_kernel(netns)

        # Only Qubes' table comes back: nothing the agent owns changed meanwhile.
        nft(netns, "-f", "-", stdin=qubes_table_alone())
        poll(
            lambda: (
                store.read_status().per_key[DNAT_KEY] == "applied"
                and forward_in_kernel(netns)
                and owned_jumps(netns) == 2
            ),
            "the forward applied again",
        )


def test_rules_lost_while_the_agent_was_not_listening_are_still_repaired(
    netns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The agent does not listen to the ruleset while it loads: whatever removed our table
    right after its load must still be noticed (the ruleset generation says), not taken
    for the load's own change."""
    store = EntryStore(tmp_path / "sys-firewall")
    generation = store.set_many({**STATIC, DNAT_KEY: DNAT})
    with gated_agent(netns, store, tmp_path, gate_on="applied", closed=True) as (gate, entered):
        poll(entered.exists, "the agent's load done, the agent not listening yet (held)")
        assert forward_in_kernel(netns)
        nft(netns, "delete", "table", "ip", "qubes-portfwd")
        gate.unlink()
        poll(
            lambda: (
                store.read_status().per_key.get(DNAT_KEY) == "applied"
                and forward_in_kernel(netns)
                and owned_jumps(netns) == 2
            ),
            "the forward back and reported applied",
        )
        assert store.read_status().handled == generation


def test_without_ruleset_notifications_lost_rules_are_found_by_the_timed_check(
    netns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = EntryStore(tmp_path / "sys-firewall")
    generation = store.set_many({**STATIC, DNAT_KEY: DNAT})
    with gated_agent(netns, store, tmp_path, ruleset_events=False):  # never held here
        assert store.wait_for_handled(generation, DEADLINE).per_key[DNAT_KEY] == "applied"
        nft(netns, "delete", "table", "ip", "qubes-portfwd")
        # Within the fallback interval (5 s) the check compares fingerprints and repairs.
        poll(
            lambda: store.read_status().per_key[DNAT_KEY] == "applied" and forward_in_kernel(netns),
            "the forward back and reported applied",
        )
