"""The lab's network with real packets: reachability out, Qubes' default isolation in, VPN."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from labnet import connect, peer_echo_server

from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

SERVER_PORT = 18080
WORK_PORT = 18081
CONTROL_PORT = 18082
TUNNEL_PORT = 18083


def test_qubes_reach_the_internet_server_masqueraded_by_the_edge(lab: Lab) -> None:
    a = lab.addresses
    with peer_echo_server(lab, "server", SERVER_PORT):
        for qube in ("work", "personal"):
            assert connect(lab, qube, a.server4, SERVER_PORT) == str(a.edge_lan4)
            assert connect(lab, qube, a.server6, SERVER_PORT) == str(a.edge_lan6)


def test_lan_clients_have_distinct_source_addresses(lab: Lab) -> None:
    a = lab.addresses
    with peer_echo_server(lab, "server", SERVER_PORT):
        for client in a.lan_clients4 + a.lan_clients6:
            server = a.server4 if client.version == 4 else a.server6
            assert connect(lab, "lan", server, SERVER_PORT, bind=client) == str(client)


def test_vpn_work_reaches_the_internet_only_through_the_tunnel(lab: Lab) -> None:
    a = lab.addresses
    with peer_echo_server(lab, "server", SERVER_PORT):
        assert connect(lab, "vpn-work", a.server4, SERVER_PORT) == str(a.provider_public4)
        lab.run("sys-vpn", ["ip", "link", "set", "wg0", "down"], check=True)
        try:
            # Tunnel down: nothing may leave by sys-vpn's eth0 instead.
            assert connect(lab, "vpn-work", a.server4, SERVER_PORT) is None
            assert connect(lab, "vpn-work", a.edge_lan4, SERVER_PORT) is None
        finally:
            lab.run("sys-vpn", ["ip", "link", "set", "wg0", "up"], check=True)
            lab.run("sys-vpn", ["ip", "route", "replace", "default", "dev", "wg0"], check=True)
        assert connect(lab, "vpn-work", a.server4, SERVER_PORT) == str(a.provider_public4)


def test_names_resolve_through_qubes_virtual_dns(lab: Lab) -> None:
    a = lab.addresses
    for qube in ("work", "vpn-work", "sys-firewall"):
        out = lab.run(
            qube, ["getent", "ahostsv4", a.server_name], capture_output=True, text=True
        ).stdout
        assert str(a.server4) in out, qube


def _accept(lab: Lab, qube: str, chain: str, rule: str) -> str:
    """Add a rule to Qubes' custom chain and return its handle (for removal)."""
    out = lab.run(
        qube,
        ["nft", "--echo", "--handle", "add", "rule", "ip", "qubes", chain, *rule.split()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.rsplit("# handle ", 1)[1].split()[0]


def _delete(lab: Lab, qube: str, chain: str, handle: str) -> None:
    lab.run(qube, ["nft", "delete", "rule", "ip", "qubes", chain, "handle", handle], check=True)


def test_nothing_reaches_work_without_a_forward(lab: Lab) -> None:
    a = lab.addresses
    work4, work6 = lab.topology["work"].address4, lab.topology["work"].address6
    attempts = [
        ("lan", work4, a.lan_clients4[0]),
        ("lan", work6, a.lan_clients6[0]),
        ("lan", a.edge_lan4, a.lan_clients4[1]),
        ("server", work4, None),
        ("server", work6, None),
        ("personal", work4, None),
        ("personal", work6, None),
        ("vpn-work", work4, None),
        ("sys-firewall", work4, None),
        ("sys-net", work4, None),
        ("provider", work4, None),
    ]
    with peer_echo_server(lab, "work", WORK_PORT):
        assert connect(lab, "work", work4, WORK_PORT) == str(work4)  # it does listen
        with ThreadPoolExecutor(len(attempts)) as pool:
            results = list(
                pool.map(lambda t: (t, connect(lab, t[0], t[1], WORK_PORT, bind=t[2])), attempts)
            )
    assert [attempt for attempt, peer in results if peer is not None] == []


def test_isolation_is_the_rules_doing(lab: Lab) -> None:
    """The control: with accepts in Qubes' custom chains, personal's attempt does arrive."""
    work4 = lab.topology["work"].address4
    with peer_echo_server(lab, "work", CONTROL_PORT):
        assert connect(lab, "personal", work4, CONTROL_PORT) is None
        forward = _accept(lab, "sys-firewall", "custom-forward", f"tcp dport {CONTROL_PORT} accept")
        incoming = _accept(lab, "work", "custom-input", f"tcp dport {CONTROL_PORT} accept")
        try:
            personal4 = lab.topology["personal"].address4
            assert connect(lab, "personal", work4, CONTROL_PORT) == str(personal4)
        finally:
            _delete(lab, "sys-firewall", "custom-forward", forward)
            _delete(lab, "work", "custom-input", incoming)
        assert connect(lab, "personal", work4, CONTROL_PORT) is None


def test_the_provider_side_reaches_sys_vpn_tunnel_address_when_allowed(lab: Lab) -> None:
    a = lab.addresses
    tunnel = a.tunnel_address("sys-vpn")
    with peer_echo_server(lab, "sys-vpn", TUNNEL_PORT):
        assert connect(lab, "provider", tunnel, TUNNEL_PORT) is None
        handle = _accept(lab, "sys-vpn", "custom-input", f"tcp dport {TUNNEL_PORT} accept")
        try:
            assert connect(lab, "provider", tunnel, TUNNEL_PORT) == str(a.provider_tunnel4)
        finally:
            _delete(lab, "sys-vpn", "custom-input", handle)


def test_exec_runs_in_the_qube_and_returns_its_status(lab: Lab) -> None:
    cli = [sys.executable, "-m", "qubes_lab", "--lab", lab.name, "exec"]
    shown = subprocess.run(
        [*cli, "work", "--", "ip", "-br", "addr", "show", "eth0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0
    assert "10.137.0.6/32" in shown.stdout
    failed = subprocess.run([*cli, "personal", "--", "sh", "-c", "exit 7"], timeout=30)
    assert failed.returncode == 7
    unknown = subprocess.run(
        [*cli, "nobody", "--", "true"], capture_output=True, text=True, timeout=30
    )
    assert unknown.returncode == 1 and "nobody" in unknown.stderr


def test_status_reports_a_healthy_lab(lab: Lab) -> None:
    status = lab.status()
    assert status.healthy
    assert {agent.qube for agent in status.agents} == set(lab.topology.qubes)
    assert "up" in status.format().splitlines()[0]
