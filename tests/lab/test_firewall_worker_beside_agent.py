"""Our agent and Qubes' qubes-firewall worker (the lab's emulation of the stock one) share
each network qube: each re-applies only its own tables, so after a firewall Set, a forward
added, the worker restarted and the agent restarted, a forward still carries packets and an
outbound drop still drops. The other's table is not even recreated: our agent would repair
its own within a moment, which traffic alone cannot tell from never losing it."""

import json

import pytest

from lifecycle_lab import LabUser, connect, echo_server, wait_until
from qubes_lab import recovery
from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

SETTLE = 20.0
BLOCKED_PORT = 8001
NETVMS = ("sys-firewall", "sys-net")


def table_handles(lab: Lab, name: str) -> dict[str, list[int]]:
    """The kernel's handles of `ip|ip6 name` in each netvm: a table made anew gets a new one."""
    handles = {}
    for qube in NETVMS:
        done = lab.run(qube, ["nft", "-j", "list", "tables"], capture_output=True, text=True)
        tables = [i["table"] for i in json.loads(done.stdout)["nftables"] if "table" in i]
        handles[qube] = sorted(t["handle"] for t in tables if t["name"] == name)
    return handles


def test_agent_and_worker_each_reapply_and_both_rule_sets_stay(lab: Lab) -> None:
    user = LabUser(lab)
    client = user.client()
    server = str(lab.addresses.server4)
    forward = None

    def outbound_dropped() -> bool:
        return connect(lab, "work", server, BLOCKED_PORT) is None

    def both_in_force(step: str) -> None:
        wait_until(lambda: user.lan_connects(80), SETTLE, f"{step}: the forward carries")
        assert outbound_dropped(), f"{step}: work's outbound drop let a connection through"
        # The drop is work's own rule: the same connection from personal gets through.
        assert connect(lab, "personal", server, BLOCKED_PORT) is not None, step

    def set_work(rules: list[str]) -> None:
        client.firewall_set("work", rules)

    def drop_rules(*extra: str) -> list[str]:
        return [f"action=drop proto=tcp dstports={BLOCKED_PORT}", *extra, "action=accept"]

    try:
        with echo_server(lab, "work"), echo_server(lab, "server", BLOCKED_PORT):
            assert not outbound_dropped()
            # Every address of work handled (the worker rebuilds its tables at each), so a
            # later new table can only be somebody else's doing.
            lab.firewall_change({"sys-firewall": ["work"]}, lambda: set_work(drop_rules()))
            wait_until(outbound_dropped, SETTLE, "the firewall Set reaches Qubes' worker")
            workers = table_handles(lab, "qubes-firewall")
            forward = user.add("work", "tcp", "80:8080", "--external", "--from", "any")
            both_in_force("a forward added")
            assert table_handles(lab, "qubes-firewall") == workers, "the agents remade it"
            ours = table_handles(lab, "qubes-portfwd")
            client.firewall_set("work", drop_rules("action=drop proto=udp dstports=9"))
            both_in_force("a second firewall Set")
            for netvm in NETVMS:
                recovery.restart(lab, f"qubes-firewall:{netvm}")
            both_in_force("the workers restarted")
            assert table_handles(lab, "qubes-portfwd") == ours, "a worker remade our table"
            workers = table_handles(lab, "qubes-firewall")
            for netvm in NETVMS:
                recovery.restart(lab, f"agent:{netvm}")
            both_in_force("the agents restarted")
            assert table_handles(lab, "qubes-firewall") == workers, "an agent remade it"
    finally:
        if forward is not None:
            client.remove_forward("work", forward)
        client.firewall_set("work", ["action=accept"])
