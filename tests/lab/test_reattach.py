"""A running qube's netvm changed through the admin service: the lab re-attaches it live, as
Qubes does. Its servers keep running and are reached by the new path only; the old netvm's
anti-spoofing no longer admits its address."""

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from servers import PEER_SERVER, ask, peer_server, serving, wait_for

from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient, ForwardState, HopState

pytestmark = pytest.mark.lab

PORT = 8080
WORK4 = "10.137.0.6"
OLD_PATH = ["sys-net", "sys-firewall", "work"]
VPN_PATH = ["sys-vpn", "work"]
TIMEOUT = 20.0  # the admin re-plans every second, hop level by level
CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Env:
    lab: Lab
    client: AdminClient
    server: subprocess.Popen[str]  # started in work before any netvm change

    def applied(self, forward_id: str, path: list[str]) -> bool:
        forward = next((f for f in self.client.forwards() if f.id == forward_id), None)
        if forward is None or forward.state != ForwardState.ACTIVE:
            return False
        return [(h.qube, h.state) for h in forward.hops] == [(q, HopState.APPLIED) for q in path]

    def from_lan(self, port: int) -> str | None:
        a = self.lab.addresses
        return ask(self.lab, "lan", "tcp", a.edge_lan4, port, a.lan_clients4[0])

    def from_tunnel(self, port: int) -> str | None:
        return ask(self.lab, "provider", "tcp", self.lab.addresses.tunnel_address("sys-vpn"), port)

    def admitted(self, netvm: str) -> str:
        """The anti-spoofing sets of `netvm`: which addresses it takes from which vif."""
        done = self.lab.run(
            netvm, ["nft", "list", "table", "ip", "qubes"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split("chain", 1)[0]

    def ipv6_tables(self, qube: str) -> list[str]:
        """Qubes' IPv6 base tables in the qube's kernel."""
        done = self.lab.run(qube, ["nft", "list", "tables"], capture_output=True, text=True)
        tables = [line.removeprefix("table ") for line in done.stdout.splitlines()]
        return [t for t in tables if t in ("ip6 qubes", "ip6 qbs-filter")]

    def qvm_prefs(self, *argv: str) -> None:
        env = {**os.environ, "QUBESD_SOCKET": str(self.lab.admin_socket)}
        done = subprocess.run(
            [sys.executable, "-m", "qubes_lab.tools.qvm_prefs", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def env(private_lab: Lab) -> Iterator[Env]:
    lab = private_lab
    argv = [sys.executable, "-c", PEER_SERVER, "tcp", str(PORT)]
    with serving(lab, "work", argv, "tcp", PORT) as server:
        yield Env(lab, AdminClient(lab.admin_socket, timeout=CLI_TIMEOUT), server)


@pytest.fixture(autouse=True)
def back_home(env: Env) -> Iterator[None]:
    yield
    env.client.set_property("work", "netvm", "sys-firewall")
    for forward in env.client.forwards_of("work"):
        env.client.remove_forward("work", forward.id)


def test_a_following_forward_reaches_the_same_server_through_the_new_netvm_and_back(
    env: Env,
) -> None:
    rule = f"action=forward forwardtype=external proto=tcp srcports=81 dstports={PORT}"
    forward_id = env.client.add_forward("work", f"{rule} srchost=0.0.0.0/0 follow=yes")
    assert wait_for(lambda: env.applied(forward_id, OLD_PATH), TIMEOUT)
    lan_client = str(env.lab.addresses.lan_clients4[0])
    assert env.from_lan(81) == lan_client

    env.client.set_property("work", "netvm", "sys-vpn")
    # Re-attached by the time the call returns, as qvm-prefs on Qubes.
    assert env.lab.topology["work"].netvm == "sys-vpn"
    assert WORK4 not in env.admitted("sys-firewall")
    assert f'"vif6.0" . {WORK4}' in env.admitted("sys-vpn")
    assert env.ipv6_tables("work") == ["ip6 qbs-filter"]  # as after a restart behind sys-vpn
    assert wait_for(lambda: env.applied(forward_id, VPN_PATH), TIMEOUT)
    assert env.from_tunnel(81) == str(env.lab.addresses.provider_tunnel4)
    assert env.from_lan(81) is None

    env.qvm_prefs("work", "netvm", "sys-firewall")
    assert f'"vif6.0" . {WORK4}' in env.admitted("sys-firewall")
    assert WORK4 not in env.admitted("sys-vpn")
    assert env.ipv6_tables("work") == ["ip6 qubes"]
    assert wait_for(lambda: env.applied(forward_id, OLD_PATH), TIMEOUT)
    assert env.from_lan(81) == lan_client
    assert env.from_tunnel(81) is None
    assert env.server.poll() is None, "the qube's own server went down with the move"
    # IPv6 came back with the IPv6 uplink (sys-vpn has none): its base tables too.
    ipv6 = env.client.add_forward("work", f"{rule.replace('=81', '=82')} srchost=::/0")
    assert wait_for(lambda: env.applied(ipv6, OLD_PATH), TIMEOUT)
    a = env.lab.addresses
    lan6 = str(a.lan_clients6[0])
    assert ask(env.lab, "lan", "tcp", a.edge_lan6, 82, lan6) == lan6


def test_no_netvm_detaches_the_qube_and_a_netvm_attaches_it_again(env: Env) -> None:
    a = env.lab.addresses
    with peer_server(env.lab, "server", "tcp", 8099):
        env.client.set_property("work", "netvm", "")
        links = env.lab.run("work", ["ip", "-o", "link"], capture_output=True, text=True)
        assert "eth0" not in links.stdout
        assert "vif6.0" not in env.admitted("sys-firewall")
        assert "/qubes-gateway" not in env.lab.store("work").read()[1]
        assert ask(env.lab, "work", "tcp", a.server4, 8099) is None

        env.client.set_property("work", "netvm", "sys-firewall")
        gateway = env.lab.store("work").read()[1].get("/qubes-gateway")
        assert gateway == str(env.lab.topology["sys-firewall"].address4)
        # Out to the internet again, masqueraded by the edge.
        assert ask(env.lab, "work", "tcp", a.server4, 8099) == str(a.edge_lan4)
    assert env.server.poll() is None


def test_reattach_by_hand_leaves_a_qube_already_behind_its_netvm_alone(env: Env) -> None:
    argv = [sys.executable, "-m", "qubes_lab", "--lab", env.lab.name, "reattach", "work"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "work: already behind sys-firewall"
    refused = subprocess.run(
        [*argv[:-1], "sys-net"], capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    assert refused.returncode == 1 and "edge" in refused.stderr
