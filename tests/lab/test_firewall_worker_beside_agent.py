"""Our agent and Qubes' qubes-firewall worker (the lab's emulation of the stock one) share
each network qube: each re-applies only its own tables, so after a firewall Set, a forward
added, the worker restarted and the agent restarted, a forward still carries packets and an
outbound drop still drops."""

import pytest

from qubes_lab import recovery
from qubes_lab.builder import Lab
from tests.admin.lifecycle_lab import LabUser, connect, echo_server, wait_until

pytestmark = pytest.mark.lab

SETTLE = 20.0
BLOCKED_PORT = 8001


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

    try:
        with echo_server(lab, "work"), echo_server(lab, "server", BLOCKED_PORT):
            assert not outbound_dropped()
            client.firewall_set(
                "work", [f"action=drop proto=tcp dstports={BLOCKED_PORT}", "action=accept"]
            )
            wait_until(outbound_dropped, SETTLE, "the firewall Set reaches Qubes' worker")
            forward = user.add("work", "tcp", "80:8080", "--external", "--from", "any")
            both_in_force("a forward added (the agents applied)")
            for netvm in ("sys-firewall", "sys-net"):
                recovery.restart(lab, f"qubes-firewall:{netvm}")
            both_in_force("the workers restarted")
            for netvm in ("sys-firewall", "sys-net"):
                recovery.restart(lab, f"agent:{netvm}")
            both_in_force("the agents restarted")
    finally:
        if forward is not None:
            client.remove_forward("work", forward)
        client.firewall_set("work", ["action=accept"])
