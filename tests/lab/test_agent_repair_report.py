"""What an agent reports while its kernel lacks its rules: never `applied`.

The agent runs alone in a throwaway namespace (the `netns` fixture of test_agent_service).
To look inside a repair, its `nft -f` can be held at a gate: a wrapper found first on its
PATH waits while a file exists, then runs the real nft. Nothing else about the agent changes.
"""

import ipaddress
import os
import shutil
import subprocess
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
    agent_argv,
    netns,
    nft,
    owned_jumps,
    poll,
)

from qubes_lab.entry_store import EntryStore
from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset

pytestmark = pytest.mark.lab

FORWARD_ID = DNAT_KEY.split("/")[2]
GATE_WAIT_STEPS = 600  # of 0.05 s: a held nft gives up waiting after 30 s

# `nft` called with the words $NFT_GATE_ON (`-f`: an apply; `list ruleset`: the listing the
# agent fingerprints) waits while $NFT_GATE exists, after touching $NFT_ENTERED; other calls
# run at once.
GATED_NFT = """#!/bin/sh
case " $* " in
  *" $NFT_GATE_ON "*)
    if [ -e "$NFT_GATE" ]; then
      : > "$NFT_ENTERED"
      i=0
      while [ -e "$NFT_GATE" ] && [ "$i" -lt {steps} ]; do sleep 0.05; i=$((i + 1)); done
    fi ;;
esac
exec {nft} "$@"
"""


@contextmanager
def gated_agent(
    namespace: str, store: EntryStore, tmp_path: Path, gate_on: str = "-f", closed: bool = False
) -> Iterator[tuple[Path, Path]]:
    """The agent running with a gate on its `nft` calls with the words `gate_on`, closed from
    the start if `closed`; yields (gate, entered) file paths."""
    real_nft = shutil.which("nft")
    assert real_nft is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "nft"
    wrapper.write_text(
        GATED_NFT.replace("{steps}", str(GATE_WAIT_STEPS)).replace("{nft}", real_nft)
    )
    wrapper.chmod(0o755)
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "NFT_GATE": str(gate),
        "NFT_ENTERED": str(entered),
        "NFT_GATE_ON": gate_on,
    }
    if closed:
        gate.touch()
    agent = subprocess.Popen(
        agent_argv(namespace, store.path), env=env, stderr=subprocess.DEVNULL, text=True
    )
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
        poll(entered.exists, "the agent re-applying (held at its nft -f)")
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


def test_rules_lost_before_the_agent_took_its_reference_are_still_repaired(
    netns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The reference listing comes after the report: whatever removed our jumps in between
    must not become what the later checks call intact."""
    store = EntryStore(tmp_path / "sys-firewall")
    generation = store.set_many({**STATIC, DNAT_KEY: DNAT})
    with gated_agent(netns, store, tmp_path, gate_on="list ruleset", closed=True) as (
        gate,
        entered,
    ):
        assert store.wait_for_handled(generation, DEADLINE).per_key[DNAT_KEY] == "applied"
        poll(entered.exists, "the agent taking its reference listing (held)")
        nft(netns, "delete", "table", "ip", "qubes")
        gate.unlink()
        poll(
            lambda: "base table ip qubes is missing" in store.read_status().per_key[DNAT_KEY],
            "the forward reported left out",
        )
        nft(netns, "-f", "-", stdin=qubes_table_alone())
        poll(
            lambda: store.read_status().per_key[DNAT_KEY] == "applied" and owned_jumps(netns) == 2,
            "the forward applied again",
        )
