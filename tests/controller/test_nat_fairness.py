"""Each qube's share of NAT traversal, against a real admin service (no root): one qube
asking without end is refused alone (`result=limited`), in dom0 per (netvm, client qube) and
in natd's way to dom0 per client address, while another qube is served as usual."""

import asyncio
import ipaddress
import time

from admin_service import RunningService
from qubes_portfwd.adapters.qubesd_socket_nat import QubesdSocketNat
from qubes_portfwd.client import QubesdError
from qubes_portfwd.controller.nat_limits import MAX_MAPPINGS
from qubes_portfwd.controller.nat_mapping import NatAsk, mapping_rule
from qubes_portfwd.model.rule_text import format_rule
from qubes_portfwd.natd.dom0 import Ask, Dom0, Verdict

from .test_nat_methods import PERSONAL, WORK, ask

FLOOD = 200  # requests: far beyond any share, bounded


def test_one_qube_filling_the_waiting_list_leaves_another_its_place(
    service: RunningService,
) -> None:
    client = service.client()
    replies = [
        client.nat_request("sys-firewall", ask(PERSONAL, 9000 + n, 19000 + n)) for n in range(80)
    ]
    pending = [r for r in replies if r["result"] == "pending"]
    assert 0 < len(pending) <= 8
    assert all(r["result"] == "limited" for r in replies[len(pending) :])
    assert {r.get("limit") for r in replies[len(pending) :]} <= {"pending", "rate"}
    # work was never part of it: its request waits for the user as usual.
    assert client.nat_request("sys-firewall", ask(WORK))["result"] == "pending"
    assert {e["qube"] for e in client.nat_pending()} == {"personal", "work"}


def test_a_qube_over_its_rate_is_refused_alone(service: RunningService) -> None:
    client = service.client()
    refused = None
    for _ in range(FLOOD):
        try:
            client.nat_address("sys-firewall", PERSONAL)
        except QubesdError as err:
            refused = err
            break
    assert refused is not None, f"{FLOOD} address requests from personal, none refused"
    assert "too many requests" in refused.message
    assert client.nat_address("sys-firewall", WORK) == "0.0.0.0"
    limited = client.nat_request("sys-firewall", ask(PERSONAL, lifetime=0))
    assert (limited["result"], limited["limit"]) == ("limited", "rate")
    assert float(limited["retry-after"]) > 0


def test_a_qube_holding_its_quota_of_mappings_gets_no_new_one(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("personal", ["ports=1024-65535 action=allow"])
    now, personal = time.time(), ipaddress.IPv4Address(PERSONAL)
    held = [
        mapping_rule(
            NatAsk("sys-firewall", "personal", personal, "tcp", p, p, 600, "UPnP"), p, 600, now
        )
        for p in range(2000, 2000 + MAX_MAPPINGS)
    ]
    for rule in held:
        client.add_forward("personal", format_rule(rule))
    refused = client.nat_request("sys-firewall", ask(PERSONAL, 9000, 19000))
    assert (refused["result"], refused["limit"]) == ("limited", "mappings")
    renewed = client.nat_request("sys-firewall", ask(PERSONAL, 2000, 2000))
    assert renewed["result"] == "granted"  # one it holds: renewed, not refused
    assert client.nat_request("sys-firewall", ask(WORK, 9000, 19000))["result"] == "pending"


def test_natd_gives_each_client_its_own_calls_to_dom0(service: RunningService) -> None:
    """personal's asks wait for the user and hold natd's calls; work's still go through."""
    client = service.client()
    client.nat_policy_set("work", ["ports=1024-65535 action=allow"])

    async def scenario() -> tuple[list[Verdict], Verdict]:
        dom0 = Dom0(QubesdSocketNat(service.client(), "sys-firewall"), wait=20)
        try:
            floods = [
                asyncio.create_task(
                    dom0.ask(Ask(ipaddress.ip_address(PERSONAL), "tcp", p, p, 600, "NAT-PMP"))
                )
                for p in range(9000, 9040)
            ]
            # The refused ones are answered at once; the others wait in dom0.
            while sum(t.done() for t in floods) < len(floods) - 8:
                await asyncio.sleep(0.01)
            work = await dom0.ask(Ask(ipaddress.ip_address(WORK), "tcp", 8080, 18080, 600, "UPnP"))
            for entry in await asyncio.to_thread(client.nat_pending):
                await asyncio.to_thread(client.nat_deny, entry["id"])
            answers = await asyncio.gather(*floods)
            return [a.verdict for a in answers], work.verdict
        finally:
            dom0.close()

    flood, work = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert work == Verdict.GRANTED
    assert flood.count(Verdict.LIMITED) == 32
    assert flood.count(Verdict.REFUSED) == 8  # the ones that waited, denied by the user
