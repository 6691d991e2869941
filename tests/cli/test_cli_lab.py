"""The lab issue's scenarios set up only with qvm-portfwd / qvm-firewall, checked with real
clients (curl) between the lab's namespaces."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab_process import tcp_server
from lifecycle_lab import LabUser
from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient
from qubes_portfwd.model.rule import ForwardRule, forward_id
from qubes_portfwd.model.rule_text import parse_rule

pytestmark = pytest.mark.lab

LISTEN_TIMEOUT = 5.0
REACH_TIMEOUT = 15.0  # a forward just added may take a moment to reach every hop
CURL_MAX_TIME = "2"
SERVER_PORT = 8080


@dataclass(frozen=True)
class LabWithService(LabUser):
    """The user's CLIs, and curl between the lab's namespaces."""

    @property
    def socket_path(self) -> Path:
        return self.lab.admin_socket

    def fetch(
        self, host: str, url: str, source: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["curl", "-sS", "--max-time", CURL_MAX_TIME, url]
        if source is not None:
            argv[1:1] = ["--interface", source]
        return self.lab.run(host, argv, capture_output=True, text=True, timeout=10)

    def wait_fetch(self, host: str, url: str, source: str | None = None) -> str:
        """The page once it is reachable; fails with curl's last error after a deadline."""
        deadline = time.monotonic() + REACH_TIMEOUT
        while True:
            done = self.fetch(host, url, source)
            if done.returncode == 0:
                return done.stdout
            assert time.monotonic() < deadline, f"{url} from {host}: {done.stderr.strip()}"

    def refused(self, host: str, url: str, source: str | None = None) -> bool:
        done = self.fetch(host, url, source)
        return done.returncode != 0


@pytest.fixture(scope="module")
def lab_service(lab: Lab) -> LabWithService:
    """The session's lab: each test leaves work's and personal's rules as it found them."""
    return LabWithService(lab)


@pytest.fixture
def env(lab_service: LabWithService) -> Iterator[LabWithService]:
    """Each test starts from Qubes' default rules and leaves them so."""
    try:
        yield lab_service
    finally:
        client = AdminClient(lab_service.socket_path)
        for qube in ("work", "personal"):
            lab_service.cli("qvm_firewall", qube, "reset")
            for forward_id in client.forward_ids(qube):
                client.remove_forward(qube, forward_id)


@contextmanager
def web_server(lab: Lab, host: str, page_dir: Path, port: int = SERVER_PORT) -> Iterator[str]:
    """python3 -m http.server in `host`, serving a page that names the host; yields the text."""
    text = f"hello from {host} {os.getpid()}"
    (page_dir / "index.html").write_text(text + "\n")
    # `--bind ::` is dual-stack (http.server clears IPV6_V6ONLY); the default is IPv4 only.
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "::"]
    with tcp_server(lab, host, [*argv, "--directory", str(page_dir)], port):
        yield text


def test_external_forward_from_the_lan_then_removed(env: LabWithService, tmp_path: Path) -> None:
    a = env.lab.addresses
    client = str(a.lan_clients4[0])
    url = f"http://{a.edge_lan4}:80/"
    with web_server(env.lab, "work", tmp_path) as page:
        assert env.refused("lan", url, client)  # Qubes' default isolation, before the forward
        forward = env.ok(
            "qvm_portfwd", "add", "work", "tcp", "80:8080", "--external", "--from", "192.0.2.0/24"
        ).strip()
        assert page in env.wait_fetch("lan", url, client)

        listing = env.ok("qvm_portfwd", "list")
        assert forward in listing
        assert "LAN → sys-net[applied] → sys-firewall[applied] → work:8080[applied]" in listing
        (shown,) = json.loads(env.ok("qvm_portfwd", "list", "--json"))
        assert (shown["state"], [h["state"] for h in shown["hops"]]) == (
            "active",
            ["applied", "applied", "applied"],
        )
        assert forward in env.ok("qvm_portfwd", "list", "sys-net")

        env.ok("qvm_portfwd", "del", forward)
        assert env.ok("qvm_portfwd", "list", "--json").strip() == "[]"
        assert env.refused("lan", url, client)


def _dnat_in_kernel(lab: Lab, qube: str, forward_id: str) -> bool:
    listed = lab.run(
        qube, ["nft", "list", "table", "ip", "qubes-portfwd"], capture_output=True, text=True
    ).stdout
    return f"fwd-{forward_id}" in listed


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + REACH_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {REACH_TIMEOUT} s"
        time.sleep(0.1)


def test_a_forward_is_the_feature_portfwd_id_of_its_target(
    env: LabWithService, tmp_path: Path
) -> None:
    """qvm-portfwd stores a feature; one set directly with the stock method works the same;
    the target's outbound rule list stays readable; del removes the feature and the rules."""
    a = env.lab.addresses
    lan_client = str(a.lan_clients4[0])
    client = AdminClient(env.socket_path)
    with web_server(env.lab, "work", tmp_path) as page:
        by_cli = env.ok(
            "qvm_portfwd", "add", "work", "tcp", "81:8080", "--external", "--from", "192.0.2.0/24"
        ).strip()
        assert f"portfwd.{by_cli}" in client.list_features("work")
        assert page in env.wait_fetch("lan", f"http://{a.edge_lan4}:81/", lan_client)

        line = (
            "action=forward forwardtype=external proto=tcp srcports=82-82 dstports=8080-8080 "
            "srchost=192.0.2.0/24 via=sys-firewall,sys-net"
        )
        rule = parse_rule(line)
        assert isinstance(rule, ForwardRule)
        direct = forward_id("work", rule)
        client.set_feature("work", f"portfwd.{direct}", line)
        assert page in env.wait_fetch("lan", f"http://{a.edge_lan4}:82/", lan_client)
        assert "sys-net[applied] → sys-firewall[applied] → work:8080[applied]" in env.ok(
            "qvm_portfwd", "list", "work"
        )
        # Qubes' own view of a forwarding qube: accept/drop only, no error.
        table = env.ok("qvm_firewall", "work", "list").splitlines()
        assert table[0].split()[:3] == ["NO", "ACTION", "HOST"] and len(table) == 2
        assert env.ok("qvm_firewall", "work", "list", "--raw") == "action=accept\n"

        for forward in (by_cli, direct):
            assert _dnat_in_kernel(env.lab, "sys-net", forward)
            env.ok("qvm_portfwd", "del", forward)
            assert f"portfwd.{forward}" not in client.list_features("work")
            _wait(lambda f=forward: not _dnat_in_kernel(env.lab, "sys-net", f), "DNAT removed")
        assert env.refused("lan", f"http://{a.edge_lan4}:81/", lan_client)
        assert env.refused("lan", f"http://{a.edge_lan4}:82/", lan_client)


def test_srchost_lets_one_lan_client_in_and_refuses_another(
    env: LabWithService, tmp_path: Path
) -> None:
    a = env.lab.addresses
    allowed, other = (str(c) for c in a.lan_clients4[:2])
    url = f"http://{a.edge_lan4}:8000/"
    with web_server(env.lab, "work", tmp_path) as page:
        env.ok(
            "qvm_portfwd",
            "add",
            "work",
            "tcp",
            "8000:8080",
            "--external",
            "--from",
            f"{allowed}/32",
        )
        assert page in env.wait_fetch("lan", url, allowed)
        assert env.refused("lan", url, other)


def test_internal_forward_for_a_named_qube(env: LabWithService, tmp_path: Path) -> None:
    netvm_address = env.lab.topology["sys-firewall"].address4
    url = f"http://{netvm_address}:2222/"
    with web_server(env.lab, "work", tmp_path) as page:
        assert env.refused("personal", url)
        forward = env.ok(
            "qvm_portfwd", "add", "work", "tcp", "2222:8080", "--internal", "--from", "personal"
        ).strip()
        assert page in env.wait_fetch("personal", url)
        assert "personal → sys-firewall[applied] → work:8080[applied]" in env.ok(
            "qvm_portfwd", "list", "work"
        )
        # Internal means internal: the LAN does not get it.
        a = env.lab.addresses
        assert env.refused("lan", f"http://{a.edge_lan4}:2222/", str(a.lan_clients4[0]))
        env.ok("qvm_portfwd", "del", forward)
        assert env.refused("personal", url)


def test_outbound_firewall_rule_set_with_qvm_firewall(env: LabWithService, tmp_path: Path) -> None:
    server = env.lab.addresses.server4
    url = f"http://{server}:{SERVER_PORT}/"
    with web_server(env.lab, "server", tmp_path) as page:
        assert page in env.wait_fetch("work", url)
        env.ok("qvm_firewall", "work", "add", "--before", "0", "drop", str(server), "tcp", "8080")
        assert "drop" in env.ok("qvm_firewall", "work", "list")
        deadline = time.monotonic() + REACH_TIMEOUT
        while not env.refused("work", url):
            assert time.monotonic() < deadline, "the drop rule never took effect"
        assert page in env.wait_fetch("personal", url)  # only work's firewall changed
        env.ok("qvm_firewall", "work", "del", "--rule-no", "0")
        assert page in env.wait_fetch("work", url)


UDP_ECHO = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
    "s.bind(('::',int(sys.argv[1])))\n"
    "while True:\n"
    "    data,peer=s.recvfrom(2048)\n"
    "    s.sendto(b'echo '+data,peer)\n"
)
UDP_ASK = (
    "import socket,sys\n"
    "family=socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n"
    "s=socket.socket(family,socket.SOCK_DGRAM)\n"
    "s.settimeout(1.0)\n"
    "s.sendto(b'ping',(sys.argv[1],int(sys.argv[2])))\n"
    "print(s.recv(2048).decode())\n"
)


@contextmanager
def udp_echo(lab: Lab, host: str, port: int) -> Iterator[None]:
    server = lab.popen(
        host, [sys.executable, "-c", UDP_ECHO, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while (
            f":{port}"
            not in lab.run(
                host, ["ss", "-Hlun", f"sport = :{port}"], capture_output=True, text=True
            ).stdout
        ):
            assert server.poll() is None, f"UDP echo in {host} exited"
            assert time.monotonic() < deadline, f"UDP echo in {host} not bound"
            time.sleep(0.02)
        yield
    finally:
        server.terminate()
        server.wait(timeout=5)


def udp_answers(lab: Lab, host: str, address: object, port: int) -> bool:
    done = lab.run(
        host, [sys.executable, "-c", UDP_ASK, str(address), str(port)],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == "echo ping"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + REACH_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, what


def test_udp_forward_from_the_lan(env: LabWithService) -> None:
    a = env.lab.addresses
    with udp_echo(env.lab, "work", 5300):
        assert not udp_answers(env.lab, "lan", a.edge_lan4, 53)
        env.ok("qvm_portfwd", "add", "work", "udp", "53:5300", "--external", "--from", "any")
        wait_until(lambda: udp_answers(env.lab, "lan", a.edge_lan4, 53), "UDP forward")
        # proto=udp only: TCP on the same port stays closed
        assert env.refused("lan", f"http://{a.edge_lan4}:53/")


def test_port_range_with_remapping(env: LabWithService, tmp_path: Path) -> None:
    a = env.lab.addresses
    with web_server(env.lab, "work", tmp_path, 9001) as page:
        forward = env.ok(
            "qvm_portfwd", "add", "work", "tcp", "7000-7002:9000-9002", "--external", "--from",
            "192.0.2.0/24",
        ).strip()  # fmt: skip
        # 7001 maps to 9001 where the server is; 7000 maps to 9000 where nothing listens.
        assert page in env.wait_fetch("lan", f"http://{a.edge_lan4}:7001/")
        assert env.refused("lan", f"http://{a.edge_lan4}:7000/")
        listing = env.ok("qvm_portfwd", "list")
        assert forward in listing
        assert "7000-7002→9000-9002" in listing


def test_ipv6_forward_from_the_lan(env: LabWithService, tmp_path: Path) -> None:
    a = env.lab.addresses
    url = f"http://[{a.edge_lan6}]:80/"
    client = str(a.lan_clients6[0])
    with web_server(env.lab, "work", tmp_path) as page:
        assert env.refused("lan", url, client)
        env.ok(
            "qvm_portfwd", "add", "work", "tcp", "80:8080", "--external", "--from",
            "2001:db8:0:1::/64",
        )  # fmt: skip
        assert page in env.wait_fetch("lan", url, client)
        # An IPv6 forward opens nothing on IPv4.
        assert env.refused("lan", f"http://{a.edge_lan4}:80/", str(a.lan_clients4[0]))


def test_forward_behind_the_vpn_is_reached_from_the_provider_not_the_lan(
    env: LabWithService, tmp_path: Path
) -> None:
    a = env.lab.addresses
    tunnel = a.tunnel_address("sys-vpn")
    try:
        with web_server(env.lab, "vpn-work", tmp_path) as page:
            env.ok(
                "qvm_portfwd", "add", "vpn-work", "tcp", "80:8080", "--external", "--from", "any"
            )
            assert page in env.wait_fetch("provider", f"http://{tunnel}:80/")
            assert "VPN → sys-vpn[applied] → vpn-work:8080[applied]" in env.ok(
                "qvm_portfwd", "list", "vpn-work"
            )
            # Nothing was opened upstream of the tunnel qube: the LAN gets nowhere.
            assert env.refused("lan", f"http://{a.edge_lan4}:80/", str(a.lan_clients4[0]))
            for qube in ("sys-net", "sys-firewall"):
                nat = env.lab.run(
                    qube, ["nft", "list", "table", "ip", "qubes-portfwd"],
                    capture_output=True, text=True,
                ).stdout  # fmt: skip
                assert "fwd-" not in nat, f"{qube} has a rule for a forward behind the VPN"
    finally:
        env.cli("qvm_firewall", "vpn-work", "reset")
        client = AdminClient(env.socket_path)
        for forward_id in client.forward_ids("vpn-work"):
            client.remove_forward("vpn-work", forward_id)
