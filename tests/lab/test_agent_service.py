"""The agent alone in one throwaway namespace with Qubes' base rules: apply, report, repair."""

import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qubes_lab.entry_store import EntryStore
from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset

pytestmark = pytest.mark.lab

DNAT_KEY = "/qubes-portfwd/0123456789ab/4"
DNAT = (
    "role=dnat family=4 proto=tcp in=eth0 ports=80-80 to=10.137.0.6 toports=8080-8080 "
    "srchost=192.0.2.0/24"
)
WORK = "10.137.0.6"
STATIC = {
    "/name": "sys-firewall",
    "/qubes-service/qubes-firewall": "1",
    "/qubes-primary-dns": "10.139.1.1",
    "/qubes-secondary-dns": "10.139.1.2",
}
FIREWALL = {
    f"/qubes-firewall/{WORK}/policy": "drop",
    f"/qubes-firewall/{WORK}/0000": "action=accept proto=tcp dstports=443-443",
}
DEADLINE = 15.0


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"qpt-agent-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # WORK is a downstream qube: the agent DNATs only to addresses routed out of a vif.
        for command in (
            ["link", "add", "vif6.0", "type", "veth", "peer", "name", "vif6.0-peer"],
            ["link", "set", "vif6.0", "up"],
            ["route", "add", WORK, "dev", "vif6.0"],
        ):
            subprocess.run(["ip", "-n", name, *command], check=True)
        params = BaseParams(
            provides_network=True,
            downstream=(Downstream("vif6.0", ipaddress.IPv4Address(WORK)),),
        )
        nft(name, "-f", "-", stdin=base_ruleset(params))
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def nft(netns: str, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def agent_argv(netns: str, store: Path, *extra: str) -> list[str]:
    return [
        "ip", "netns", "exec", netns, sys.executable, "-m", "qubes_lab.roots.agent",
        "--qube", "sys-firewall", "--store", str(store), *extra,
    ]  # fmt: skip


def owned_jumps(netns: str) -> int:
    objects = json.loads(nft(netns, "-j", "list", "ruleset"))["nftables"]
    return sum(
        1
        for o in objects
        if "rule" in o
        and o["rule"]["table"] == "qubes"
        and o["rule"]["chain"].startswith("custom-")
        and o["rule"].get("comment") == "qubes-portfwd"
    )


def poll(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        time.sleep(0.05)


def test_once_applies_and_reports_every_entry(netns: str, tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "sys-firewall")
    broken_key = "/qubes-portfwd/ba0000000000/4"
    generation = store.set_many(
        {**STATIC, **FIREWALL, DNAT_KEY: DNAT, broken_key: DNAT.replace("srchost=", "srchost=x,")}
    )
    subprocess.run(agent_argv(netns, store.path, "--once"), check=True, timeout=60)
    status = store.read_status()
    assert status.handled == generation
    assert status.per_key[DNAT_KEY] == "applied"
    assert f"/qubes-firewall/{WORK}/0000" not in status.per_key  # the stock worker's keys
    assert status.per_key[broken_key].startswith("srchost:")
    ruleset = nft(netns, "list", "ruleset")
    assert "0123456789ab" in ruleset
    assert "ba0000000000" not in ruleset
    assert owned_jumps(netns) == 2
    subprocess.run(agent_argv(netns, store.path, "--once"), check=True, timeout=60)
    assert owned_jumps(netns) == 2


def test_the_running_agent_follows_changes_and_repairs_flushed_rules(
    netns: str, tmp_path: Path
) -> None:
    store = EntryStore(tmp_path / "sys-firewall")
    store.set_many({**STATIC, **FIREWALL})
    agent = subprocess.Popen(agent_argv(netns, store.path), stderr=subprocess.PIPE, text=True)
    try:
        store.wait_for_handled(1, DEADLINE)
        generation = store.set(DNAT_KEY, DNAT)
        assert store.wait_for_handled(generation, DEADLINE).per_key[DNAT_KEY] == "applied"
        assert "0123456789ab" in nft(netns, "list", "table", "ip", "qubes-portfwd")

        nft(netns, "flush", "chain", "ip", "qubes", "custom-forward")
        nft(netns, "delete", "table", "ip", "qubes-portfwd")
        poll(lambda: owned_jumps(netns) == 2, "jumps restored")
        poll(
            lambda: "0123456789ab" in nft(netns, "list", "ruleset"),
            "the forward's NAT table restored",
        )

        generation = store.delete(DNAT_KEY)
        store.wait_for_handled(generation, DEADLINE)
        assert "0123456789ab" not in nft(netns, "list", "ruleset")
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=10)
    assert agent.returncode == 0
    assert "re-applying" in stderr
    assert "stopped" in stderr


def test_a_failed_transaction_keeps_the_previous_rules_and_says_why(
    netns: str, tmp_path: Path
) -> None:
    store = EntryStore(tmp_path / "sys-firewall")
    store.set_many({**STATIC, **FIREWALL, DNAT_KEY: DNAT})
    subprocess.run(agent_argv(netns, store.path, "--once"), check=True, timeout=60)
    before = nft(netns, "list", "table", "ip", "qubes-portfwd")
    # A base chain squatting on our chain's name makes our whole transaction fail.
    nft(
        netns,
        "-f",
        "-",
        stdin="flush chain ip qubes custom-forward\n"
        "flush chain ip qubes portfwd-forward\n"
        "delete chain ip qubes portfwd-forward\n"
        "add chain ip qubes portfwd-forward { type filter hook forward priority 5; }\n",
    )
    generation = store.set(DNAT_KEY, DNAT.replace("toports=8080-8080", "toports=8081-8081"))
    result = subprocess.run(agent_argv(netns, store.path, "--once"), timeout=60)
    assert result.returncode == 1
    status = store.read_status()
    assert status.handled == generation
    assert status.per_key[DNAT_KEY].startswith("not applied: nft -f failed:")
    assert status.error is not None and "nft -f failed" in status.error
    assert nft(netns, "list", "table", "ip", "qubes-portfwd") == before
