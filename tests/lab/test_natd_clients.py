"""NAT traversal in the lab: natd in sys-firewall, the real natpmpc and upnpc in the qubes,
dom0's policy deciding, and a LAN client reaching what was mapped."""

import time
from collections.abc import Iterator

import pytest
from natd_lab import (
    POLL,
    UPLINK_ADDRESS_KEY,
    UPNP_RE,
    NatLab,
    fetch,
    tcp_server,
    wait_fetch,
)

from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

PENDING_TIMEOUT = 15.0


@pytest.fixture
def env(lab: Lab) -> Iterator[NatLab]:
    """natd in sys-firewall of the session's lab; the module's policies and mappings go after
    each test."""
    with NatLab.of(lab).cleaned() as nat:
        yield nat


def test_the_edge_is_told_its_lan_address(lab: Lab) -> None:
    # As DHCP would tell it: what NAT replies report as the public address.
    _, keys = lab.store("sys-net").read()
    assert keys[UPLINK_ADDRESS_KEY] == str(lab.addresses.edge_lan4)


def _lan(env: NatLab) -> tuple[str, str]:
    a = env.lab.addresses
    return str(a.lan_clients4[0]), str(a.edge_lan4)


def test_natpmp_allowed_mapping_reaches_work_from_the_lan(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow max-lifetime=600"])
    lan_client, edge = _lan(env)
    with tcp_server(env.lab, "work", 8081, "hello-work-natpmp"):
        assert fetch(env.lab, "lan", lan_client, edge, 18081) is None
        run = env.natpmpc("work", "-a", "18081", "8081", "tcp", "3600")
        assert run.returncode == 0, run.stderr
        assert "Public IP address : 192.0.2.2" in run.stdout
        port = run.mapped_port
        assert port == 18081
        assert "liftime 600" in run.stdout  # capped by the policy's max-lifetime
        assert wait_fetch(env.lab, "lan", lan_client, edge, port) == "hello-work-natpmp"
        assert env.nat_forwards("work") == ["NAT-PMP"]
        listing = env.cli("list", "work")
        assert "comment: NAT-PMP" in listing.stdout, listing


def test_natpmp_lifetime_zero_removes_the_forward(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    lan_client, edge = _lan(env)
    with tcp_server(env.lab, "work", 8082, "hello-again"):
        port = env.natpmpc("work", "-a", "18082", "8082", "tcp", "300").mapped_port
        assert wait_fetch(env.lab, "lan", lan_client, edge, port) == "hello-again"
        run = env.natpmpc("work", "-a", str(port), "8082", "tcp", "0")
        assert run.returncode == 0, run.stderr
        assert env.nat_forwards("work") == []
        assert fetch(env.lab, "lan", lan_client, edge, port) is None


def test_natpmp_renewal_keeps_one_forward(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    first = env.natpmpc("work", "-a", "18083", "8083", "tcp", "100").mapped_port
    second = env.natpmpc("work", "-a", "18083", "8083", "tcp", "200").mapped_port
    assert first == second
    assert env.nat_forwards("work") == ["NAT-PMP"]


def test_natpmp_refused_under_deny(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1-65535 action=deny"])
    run = env.natpmpc("work", "-a", "18084", "8084", "tcp", "300")
    assert run.returncode != 0
    assert "not authorized" in (run.stdout + run.stderr).lower()
    assert env.nat_forwards("work") == []


def test_natpmp_pending_under_ask_until_approved(env: NatLab) -> None:
    lan_client, edge = _lan(env)
    with tcp_server(env.lab, "work", 8085, "approved-work"):
        waiting = env.natpmpc_background("work", "-a", "18085", "8085", "tcp", "300")
        try:
            deadline = time.monotonic() + PENDING_TIMEOUT
            while not (pending := env.cli("pending").stdout.splitlines()[1:]):
                assert time.monotonic() < deadline, "the request never became pending"
                time.sleep(POLL)
            assert env.nat_forwards("work") == []  # nothing before the user says yes
            assert waiting.poll() is None
            request_id, qube = pending[0].split()[:2]
            assert qube == "work"
            approved = env.cli("approve", request_id)
            assert approved.returncode == 0, approved.stderr
            out, err = waiting.communicate(timeout=30)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait(timeout=5)
        assert "Mapped public port 18085 protocol TCP to local port 8085" in out, err
        assert wait_fetch(env.lab, "lan", lan_client, edge, 18085) == "approved-work"


def test_natpmp_denied_by_the_user(env: NatLab) -> None:
    waiting = env.natpmpc_background("work", "-a", "18086", "8086", "tcp", "300")
    try:
        deadline = time.monotonic() + PENDING_TIMEOUT
        while not (pending := env.client.nat_pending()):
            assert time.monotonic() < deadline, "the request never became pending"
            time.sleep(POLL)
        assert env.cli("deny", pending[0]["id"]).returncode == 0
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(timeout=5)
    assert "not authorized" in (out + err).lower()
    assert env.nat_forwards("work") == []


def test_upnp_add_reach_and_delete(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    lan_client, edge = _lan(env)
    work = str(env.lab.topology["work"].address4)
    with tcp_server(env.lab, "work", 9090, "hello-upnp"):
        run = env.upnpc("work", "-e", "my game", "-a", work, "9090", "19090", "tcp", "600")
        found = UPNP_RE.search(run.stdout)
        assert found, run.stdout + run.stderr
        assert (found.group(1), found.group(2)) == (edge, "19090")
        assert wait_fetch(env.lab, "lan", lan_client, edge, 19090) == "hello-upnp"
        assert env.nat_forwards("work") == ["UPnP: my game"]
        removed = env.upnpc("work", "-d", "19090", "tcp")
        assert "returned : 0" in removed.stdout, removed.stdout + removed.stderr
        assert env.nat_forwards("work") == []
        assert fetch(env.lab, "lan", lan_client, edge, 19090) is None


def test_personal_cannot_map_for_works_address(env: NatLab) -> None:
    for qube in ("work", "personal"):
        env.client.nat_policy_set(qube, ["ports=1-65535 action=allow"])
    work = str(env.lab.topology["work"].address4)
    run = env.upnpc("personal", "-a", work, "9091", "19091", "tcp", "600")
    assert "failed with code 606" in run.stdout, run.stdout + run.stderr
    assert env.nat_forwards("work") == [] and env.nat_forwards("personal") == []


def test_uplink_side_gets_no_answer(env: NatLab) -> None:
    """sys-net (the uplink side of sys-firewall) cannot reach the daemon at all."""
    script = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
        f"s.sendto(bytes([0, 0]), ('{env.gateway}', 5351))\n"
        "try:\n    print(len(s.recv(64)))\nexcept OSError:\n    print('silent')\n"
    )
    done = env.lab.run("sys-net", ["python3", "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "silent", done
    done = env.lab.run("work", ["python3", "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "12", done  # the same question from downstream is answered


def test_hostile_datagrams_and_requests_leave_it_serving(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    script = (
        "import socket, os\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"gw = ('{env.gateway}', 5351)\n"
        "for junk in (b'', b'\\x00', b'\\x01\\x00', b'\\x00\\x05', b'\\x00\\x01' + bytes(20),\n"
        "             b'\\x02\\x01' + bytes(58), b'\\x02\\x01' + bytes(1200), os.urandom(60)):\n"
        "    s.sendto(junk, gw)\n"
        "big = socket.create_connection((gw[0], 2869), timeout=3)\n"
        "big.sendall(b'POST /ctl/IPConn HTTP/1.1\\r\\nContent-Length: 999999\\r\\n\\r\\n')\n"
        "print(big.recv(100).split(b'\\r\\n')[0].decode())\n"
    )
    done = env.lab.run("work", ["python3", "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "HTTP/1.1 413 Content Too Large", done
    assert env.natpmpc("work", "-a", "18087", "8087", "tcp", "60").mapped_port == 18087


def test_ssdp_search_is_answered_with_the_description(env: NatLab) -> None:
    """Discovery: an M-SEARCH from work gets the description's location back.

    The unicast answer to a multicast search is not paired by conntrack: work's agent accepts
    it because work's netvm runs natd (`nft/ssdp_reply.py`); nothing is opened by hand.
    """
    script = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
        "s.sendto(b'M-SEARCH * HTTP/1.1\\r\\nHOST: 239.255.255.250:1900\\r\\n"
        'MAN: "ssdp:discover"\\r\\nMX: 1\\r\\n'
        "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\\r\\n\\r\\n',"
        " ('239.255.255.250', 1900))\n"
        "print(s.recv(2000).decode())\n"
    )
    done = env.lab.run("work", ["python3", "-c", script], capture_output=True, text=True)
    assert f"LOCATION: {env.description_url}" in done.stdout, done
