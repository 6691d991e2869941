"""NAT traversal over IPv6 in the lab: a PCP MAP (RFC 6887) over IPv6 from work to its
gateway sys-firewall, decided by dom0's policy, becomes an IPv6 external forward that a LAN
client reaches over IPv6; refused under deny, asked under ask; renewed and deleted."""

import json
import time
from collections.abc import Iterator

import pytest
from natd_ipv6_lab import (
    hop_entries,
    median_ms,
    nat_status,
    pcp_map,
    pcp_map_background,
    wait_applied,
)
from natd_lab import NatLab
from servers import ask, peer_server, wait_for

from qubes_lab.builder import Lab
from qubes_portfwd.natd import input_rules

pytestmark = pytest.mark.lab

PUBLIC_ADDRESS = "portfwd-public-address"
SUCCESS, NOT_AUTHORIZED = 0, 2
LONG_ERROR_LIFETIME = 1800  # RFC 6887 §7.4: a refusal that will not change soon
PENDING_TIMEOUT = 15.0
POLL = 0.05
ROUNDS = 5


@pytest.fixture
def env(lab: Lab) -> Iterator[NatLab]:
    """natd in sys-firewall of the session's lab; sys-net says its IPv6 outside address as a
    user would (the feature), and the policies, mappings and the feature go after each test."""
    with NatLab.of(lab).cleaned() as nat:
        nat.client.set_feature("sys-net", PUBLIC_ADDRESS, str(lab.addresses.edge_lan6))
        try:
            yield nat
        finally:
            nat.client.remove_feature("sys-net", PUBLIC_ADDRESS)


def _lan6(env: NatLab) -> tuple[str, str]:
    a = env.lab.addresses
    return str(a.lan_clients6[0]), str(a.edge_lan6)


def test_allowed_ipv6_mapping_reaches_work_from_the_lan(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow max-lifetime=600"])
    lan_client, edge = _lan6(env)
    with peer_server(env.lab, "work", "tcp", 8186):
        assert ask(env.lab, "lan", "tcp", edge, 18186, lan_client) is None
        reply = pcp_map(env, 6, 8186, 18186, 3600)
        assert reply is not None, "no PCP reply over IPv6"
        assert (reply.result, reply.port, reply.internal) == (SUCCESS, 18186, 8186)
        assert reply.lifetime == 600  # capped by the policy's max-lifetime
        assert reply.address == edge
        wait_applied(env, "work", 6)
        [status] = nat_status(env, "work", 6)
        assert "srchost=::/0" in status.rule
        assert nat_status(env, "work", 4) == []
        entries = hop_entries(env, status.id, 6)
        assert entries["sys-net"].startswith("role=dnat family=6 proto=tcp in=eth0 ports=18186")
        work6 = env.lab.topology["work"].address6
        assert entries["sys-firewall"].startswith("role=dnat family=6 proto=tcp")
        assert f"to={work6} toports=8186-8186" in entries["sys-firewall"]
        assert entries["work"].startswith("role=accept family=6 proto=tcp ports=8186-8186")
        # Routed through DNATs, no source NAT: work sees the LAN client's own address.
        assert ask(env.lab, "lan", "tcp", edge, 18186, lan_client) == lan_client
        assert env.nat_forwards("work") == ["PCP"]
        listing = env.cli("list", "work")
        assert "comment: PCP" in listing.stdout and "::/0" in listing.stdout, listing


def test_ipv6_renewal_keeps_one_forward_and_lifetime_zero_deletes_it(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    lan_client, edge = _lan6(env)
    with peer_server(env.lab, "work", "tcp", 8187):
        first = pcp_map(env, 6, 8187, 18187, 100)
        assert first is not None and first.result == SUCCESS
        wait_applied(env, "work", 6)
        [before] = nat_status(env, "work", 6)
        renewed = pcp_map(env, 6, 8187, 18187, 200)
        assert renewed is not None
        assert (renewed.result, renewed.port, renewed.lifetime) == (SUCCESS, first.port, 200)
        [after] = nat_status(env, "work", 6)
        assert after.id == before.id
        assert env.nat_forwards("work") == ["PCP"]
        assert ask(env.lab, "lan", "tcp", edge, first.port, lan_client) == lan_client
        deleted = pcp_map(env, 6, 8187, 18187, 0)
        assert deleted is not None
        assert (deleted.result, deleted.lifetime, deleted.port) == (SUCCESS, 0, 0)
        assert env.nat_forwards("work") == []
        assert hop_entries(env, after.id, 6) == {}
        assert ask(env.lab, "lan", "tcp", edge, first.port, lan_client) is None


def test_denied_ipv6_mapping_is_refused_and_nothing_stored(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1-65535 action=deny"])
    reply = pcp_map(env, 6, 8188, 18188, 600)
    assert reply is not None
    assert (reply.result, reply.lifetime) == (NOT_AUTHORIZED, LONG_ERROR_LIFETIME)
    assert env.nat_forwards("work") == []
    assert [n for n in env.client.list_features("work") if n.startswith("portfwd.")] == []


def test_asked_ipv6_mapping_waits_for_dom0s_user(env: NatLab) -> None:
    lan_client, edge = _lan6(env)
    with peer_server(env.lab, "work", "tcp", 8189):
        client = pcp_map_background(env, 6, 8189, 18189, 600)
        try:
            deadline = time.monotonic() + PENDING_TIMEOUT
            while not (pending := env.client.nat_pending()):
                assert time.monotonic() < deadline, "no pending ask in dom0"
                time.sleep(POLL)
            [entry] = pending
            assert (entry["qube"], entry["port"], entry["family"]) == ("work", "18189", "6")
            assert env.nat_forwards("work") == []
            env.client.nat_approve(entry["id"])
            # The client retransmits; the next one finds the grant.
            out, err = client.communicate(timeout=40)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(timeout=5)
        reply = json.loads(out)
        assert reply["result"] == SUCCESS, err
        wait_applied(env, "work", 6)
        assert ask(env.lab, "lan", "tcp", edge, reply["port"], lan_client) == lan_client


def test_request_to_working_mapping_ipv6_beside_ipv4(env: NatLab) -> None:
    """The same requests over IPv6 and IPv4 in one run; medians printed (no timed assert)."""
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    a = env.lab.addresses
    sources = {4: (str(a.lan_clients4[0]), str(a.edge_lan4)), 6: _lan6(env)}
    timings: dict[int, dict[str, list[float]]] = {f: {"reply": [], "working": []} for f in (4, 6)}
    with peer_server(env.lab, "work", "tcp", 8190):
        for round_no in range(ROUNDS):
            for family in (6, 4):
                lan_client, edge = sources[family]
                port = 18190 + round_no
                started = time.monotonic()
                reply = pcp_map(env, family, 8190, port, 600)
                assert reply is not None and reply.result == SUCCESS
                wait_applied(env, "work", family)
                assert ask(env.lab, "lan", "tcp", edge, reply.port, lan_client) == lan_client
                timings[family]["reply"].append(reply.seconds)  # on the wire, in work
                timings[family]["working"].append(time.monotonic() - started)
                assert pcp_map(env, family, 8190, port, 0) is not None
                assert nat_status(env, "work", family) == []
    summary = {f"IPv{f}": {k: median_ms(v) for k, v in timings[f].items()} for f in (4, 6)}
    print(f"\nPCP request to working mapping, medians of {ROUNDS} (ms): {summary}")


def test_upnp_ipv6_firewall_control_says_no_pinholes_to_upnpc(env: NatLab) -> None:
    """A qube's IPv6 address is never reachable from outside (sys-net masquerades Qubes'
    fd09::/48): the IGD 2 firewall service says so to the real upnpc, and stores nothing."""
    env.client.nat_policy_set("work", ["ports=1-65535 action=allow"])
    work6 = str(env.lab.topology["work"].address6)
    status = env.upnpc("work", "-S")
    assert "FirewallEnabled: 1 & Inbound Pinhole Allowed: 0" in status.stdout, status
    added = env.upnpc("work", "-A", "::", "0", work6, "8191", "TCP", "600")
    assert "failed with code 703 (InboundPinholeNotAllowed)" in added.stdout, added
    assert "returned : 704" in env.upnpc("work", "-D", "1").stdout
    assert "failed with code 704 (NoSuchEntry)" in env.upnpc("work", "-C", "1").stdout
    assert "failed with code 704 (NoSuchEntry)" in env.upnpc("work", "-K", "1").stdout
    assert env.nat_forwards("work") == []
    assert env.client.nat_pending() == []


def test_ipv6_input_rules_are_kept(env: NatLab) -> None:
    """natd's accept for PCP over IPv6 sits in Qubes' ip6 custom-input, with its per-source
    rate; flushed by hand, the keeper puts it back and IPv6 requests are answered again."""
    env.client.nat_policy_set("work", ["ports=1-65535 action=deny"])

    def nft(*argv: str) -> str:
        done = env.lab.run("sys-firewall", ["nft", *argv], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def in_place() -> bool:
        chain = nft("list", "chain", "ip6", "qubes", input_rules.CHAIN)
        return chain.count("ip6 saddr limit rate over") == 2 and chain.count("accept") == 2

    assert in_place()
    custom = nft("list", "chain", "ip6", "qubes", "custom-input")
    assert custom.count(f"jump {input_rules.CHAIN}") == 1, custom
    nft("flush", "chain", "ip6", "qubes", input_rules.CHAIN)
    assert wait_for(in_place, 3 * input_rules.FALLBACK_CHECK), "ip6 input rules not put back"
    reply = pcp_map(env, 6, 8192, 18192, 600)
    assert reply is not None and reply.result == NOT_AUTHORIZED
