"""A forward opens exactly what it says, with real packets: every kind at once in one lab.

Forwards go through the admin service as the user makes them. Each test shows the allowed
case getting through next to the refused ones, so a test that only sees drops cannot pass.
"""

import ipaddress
import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import ask, peer_server, wait_for

from qubes_lab import state
from qubes_lab.builder import Lab
from qubes_lab.nft_inspect import LiveRules, inspect_ruleset
from qubes_lab.qubesd.access import qube_socket_path
from qubes_portfwd.client import AdminClient, HopState

pytestmark = pytest.mark.lab

APPLY_TIMEOUT = 30.0
SYS_FIREWALL4 = "10.137.0.3"
WORK4, PERSONAL4, SYS_VPN4, VPN_WORK4 = "10.137.0.6", "10.137.0.7", "10.137.0.8", "10.137.0.9"
LAN4, LAN6 = "192.0.2.10", "2001:db8:0:1::10"  # the one LAN client the forwards allow
QUBES = ("sys-net", "sys-firewall", "work", "personal", "sys-vpn", "vpn-work")


def rule(kind: str, proto: str, srcports: str, dstports: str, srchost: str) -> str:
    return (
        f"action=forward forwardtype={kind} proto={proto} srcports={srcports} "
        f"dstports={dstports} srchost={srchost}"
    )


FORWARDS = {
    "ext4": ("work", rule("external", "tcp", "80", "8080", f"{LAN4}/32")),
    "ext6": ("work", rule("external", "tcp", "81", "8081", f"{LAN6}/128")),
    "internal": ("work", rule("internal", "tcp", "8443", "8082", "personal")),
    "range": ("work", rule("external", "tcp", "9000-9002", "7000-7002", f"{LAN4}/32")),
    "udp": ("work", rule("external", "udp", "9100", "9100", f"{LAN4}/32")),
    "vpn": ("vpn-work", rule("external", "tcp", "8098", "8090", "0.0.0.0/0")),
}
# Where each forward may leave a trace: the DNAT hops and the target.
DNAT_HOPS = {
    "ext4": ("sys-net", "sys-firewall"),
    "ext6": ("sys-net", "sys-firewall"),
    "internal": ("sys-firewall",),
    "range": ("sys-net", "sys-firewall"),
    "udp": ("sys-net", "sys-firewall"),
    "vpn": ("sys-vpn",),
}

# Watches packets before anything else sees them (a table of the test's own, in the lab).
WATCH = """
table inet qpt-watch {
  counter vpn-reply {}
  counter vpn-wg0 {}
  counter vpn-elsewhere {}
  chain pre {
    type filter hook prerouting priority -400; policy accept;
    ip saddr %(vpn_work)s tcp sport 8090 counter name "vpn-reply"
    iifname "wg0" tcp dport 8098 counter name "vpn-wg0"
    iifname != "wg0" tcp dport { 8090, 8098 } counter name "vpn-elsewhere"
  }
}
"""


@dataclass(frozen=True)
class Env:
    lab: Lab
    ids: dict[str, str]


def applied(client: AdminClient, ids: set[str]) -> bool:
    shown = [f for f in client.forwards() if f.id in ids]  # one row per family
    return {f.id for f in shown} == ids and all(
        h.state == HopState.APPLIED for f in shown for h in f.hops
    )


@pytest.fixture(scope="module")
def env(private_lab: Lab) -> Env:
    """A lab of the module's own: a watch table in three network qubes, every kind of forward."""
    lab = private_lab
    for qube in ("sys-net", "sys-firewall", "sys-vpn"):
        script = WATCH % {"vpn_work": VPN_WORK4}
        lab.run(qube, ["nft", "-f", "-"], input=script, text=True, check=True)
    client = AdminClient(lab.admin_socket, timeout=60)
    ids = {name: client.add_forward(q, line) for name, (q, line) in FORWARDS.items()}
    assert wait_for(lambda: applied(client, set(ids.values())), APPLY_TIMEOUT)
    return Env(lab, ids)


def counter(lab: Lab, qube: str, name: str) -> int:
    argv = ["nft", "-j", "list", "counter", "inet", "qpt-watch", name]
    out = lab.run(qube, argv, capture_output=True, text=True, check=True).stdout
    (found,) = [item["counter"] for item in json.loads(out)["nftables"] if "counter" in item]
    return int(found["packets"])


def live(lab: Lab, qube: str) -> tuple[LiveRules, str]:
    out = lab.run(qube, ["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    return inspect_ruleset(out.stdout), out.stdout


def test_external_ipv4_admits_only_its_srchost(env: Env) -> None:
    edge, other = env.lab.addresses.edge_lan4, env.lab.addresses.lan_clients4[1]
    with peer_server(env.lab, "work", "tcp", 8080):
        assert ask(env.lab, "lan", "tcp", edge, 80, LAN4) == LAN4
        assert ask(env.lab, "lan", "tcp", edge, 80, other) is None


def test_external_ipv6_admits_only_its_srchost(env: Env) -> None:
    edge, other = env.lab.addresses.edge_lan6, env.lab.addresses.lan_clients6[1]
    with peer_server(env.lab, "work", "tcp", 8081):
        assert ask(env.lab, "lan", "tcp", edge, 81, LAN6) == str(ipaddress.ip_address(LAN6))
        assert ask(env.lab, "lan", "tcp", edge, 81, other) is None
        # Its IPv4 sibling port is not opened by it.
        assert ask(env.lab, "lan", "tcp", env.lab.addresses.edge_lan4, 81, LAN4) is None


def test_a_port_range_admits_only_its_srchost_and_its_ports(env: Env) -> None:
    edge, other = env.lab.addresses.edge_lan4, env.lab.addresses.lan_clients4[1]
    with peer_server(env.lab, "work", "tcp", 7001), peer_server(env.lab, "work", "tcp", 7003):
        assert ask(env.lab, "lan", "tcp", edge, 9001, LAN4) == LAN4
        assert ask(env.lab, "lan", "tcp", edge, 9001, other) is None
        assert ask(env.lab, "lan", "tcp", edge, 9003, LAN4) is None  # one past the range
        assert ask(env.lab, "lan", "tcp", edge, 7001, LAN4) is None  # the inside port


def test_udp_admits_only_its_srchost(env: Env) -> None:
    edge, other = env.lab.addresses.edge_lan4, env.lab.addresses.lan_clients4[1]
    with peer_server(env.lab, "work", "udp", 9100):
        assert ask(env.lab, "lan", "udp", edge, 9100, LAN4) == LAN4
        assert ask(env.lab, "lan", "udp", edge, 9100, other) is None
        assert ask(env.lab, "lan", "tcp", edge, 9100, LAN4) is None  # not the other proto


def test_an_internal_forward_admits_only_the_named_qubes(env: Env) -> None:
    lab = env.lab
    with peer_server(lab, "work", "tcp", 8082):
        assert ask(lab, "personal", "tcp", SYS_FIREWALL4, 8443) == PERSONAL4
        assert ask(lab, "sys-vpn", "tcp", SYS_FIREWALL4, 8443) is None
        assert ask(lab, "vpn-work", "tcp", SYS_FIREWALL4, 8443) is None
        # Nothing of it toward the LAN: neither on the edge nor routed to Qubes' addresses.
        assert ask(lab, "lan", "tcp", lab.addresses.edge_lan4, 8443, LAN4) is None
        assert ask(lab, "lan", "tcp", SYS_FIREWALL4, 8443, LAN4) is None
        assert ask(lab, "lan", "tcp", WORK4, 8082, LAN4) is None


def test_a_qube_reaches_anothers_forward_through_its_netvm_only_when_named(env: Env) -> None:
    lab = env.lab
    with peer_server(lab, "work", "tcp", 8080), peer_server(lab, "work", "tcp", 8082):
        # work's external forward, asked for on personal's own netvm and on the edge.
        assert ask(lab, "personal", "tcp", SYS_FIREWALL4, 80) is None
        assert ask(lab, "personal", "tcp", lab.addresses.edge_lan4, 80) is None
        assert ask(lab, "personal", "tcp", WORK4, 8080) is None
        # The same netvm's address, on the port of the internal forward that names personal.
        assert ask(lab, "personal", "tcp", SYS_FIREWALL4, 8443) == PERSONAL4


def test_nothing_of_a_forward_appears_outside_its_path(env: Env) -> None:
    for qube in QUBES:
        rules, text = live(env.lab, qube)
        assert not rules.problems, (qube, rules.problems)
        expected = {env.ids[name] for name, hops in DNAT_HOPS.items() if qube in hops}
        assert {fid for fid, _ in rules.forward_ids} == expected, qube
        targets = {q for q, _ in FORWARDS.values()}
        assert bool(rules.inputs) == (qube in targets), qube
        for name, fid in env.ids.items():
            on_path = qube in DNAT_HOPS[name] or qube == FORWARDS[name][0]
            assert on_path or fid not in text, f"{name} ({fid}) shows on {qube}"
    personal, _ = live(env.lab, "personal")
    assert personal == LiveRules()


def test_behind_the_vpn_only_the_tunnel_reaches_the_qube(env: Env) -> None:
    lab, a = env.lab, env.lab.addresses
    tunnel = a.tunnel_address("sys-vpn")
    with peer_server(lab, "vpn-work", "tcp", 8090):
        assert ask(lab, "provider", "tcp", tunnel, 8098) == str(a.provider_tunnel4)
        for address, port in [(a.edge_lan4, 8098), (SYS_VPN4, 8098), (VPN_WORK4, 8090)]:
            assert ask(lab, "lan", "tcp", address, port, LAN4) is None, (address, port)
        assert ask(lab, "personal", "tcp", SYS_VPN4, 8098) is None
    # Its packets came in only by wg0, and vpn-work's answers never passed its netvms in clear.
    assert counter(lab, "sys-vpn", "vpn-wg0") > 0
    assert counter(lab, "sys-vpn", "vpn-elsewhere") == 0
    assert counter(lab, "sys-firewall", "vpn-reply") == 0
    assert counter(lab, "sys-net", "vpn-reply") == 0


def test_natd_reaches_dom0_only_by_its_own_socket(env: Env) -> None:
    lab = env.lab
    rules_before = AdminClient(lab.admin_socket).firewall_get("work")
    for qube in ("sys-firewall", "sys-vpn"):
        natd = state.load(lab.state_dir).process(f"natd:{qube}")  # type: ignore[union-attr]
        assert natd is not None
        argv = Path(f"/proc/{natd.pid}/cmdline").read_bytes().split(b"\0")
        path = qube_socket_path(lab.admin_socket, qube)
        assert argv[argv.index(b"--socket") + 1] == bytes(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        with sock:
            sock.connect(str(path))
            sock.sendall(f"admin.vm.firewall.Set+ {qube} name work\0action=drop\n".encode())
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(4096)
        assert reply.startswith(b"2\0PermissionDenied\0"), reply
    assert AdminClient(lab.admin_socket).firewall_get("work") == rules_before


# Sends TCP SYNs with any source address (a raw socket: the kernel takes our IP header).
RAW_SYN = r"""
import socket, struct, sys
src, dst, dport, first_sport, count = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
def csum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
s_ip, d_ip = socket.inet_aton(src), socket.inet_aton(dst)
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(count):
    tcp = struct.pack("!HHIIBBHHH", first_sport + i, dport, 1000 + i, 0, 5 << 4, 2, 64240, 0, 0)
    pseudo = s_ip + d_ip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i, 0, 64, 6, 0, s_ip, d_ip)
    sock.sendto(head + tcp, (dst, 0))
"""
SPOOFS = 5
# A hostile qube owns its kernel: it keeps its own NAT off the forged packets, which would
# otherwise rewrite their source to its true address before they leave.
NO_OWN_NAT = """
table inet qpt-raw-send {
  chain out {
    type filter hook output priority raw; policy accept;
    tcp sport 41000-41999 notrack
  }
}
"""


def send_syns(lab: Lab, qube: str, src: str, dst: object, dport: int, first_sport: int) -> None:
    argv = [sys.executable, "-c", RAW_SYN, src, str(dst), str(dport), str(first_sport)]
    lab.run(qube, [*argv, str(SPOOFS)], check=True, capture_output=True)


def antispoof_drops(lab: Lab, qube: str) -> int:
    argv = ["nft", "-j", "list", "chain", "ip", "qubes", "antispoof"]
    out = json.loads(lab.run(qube, argv, capture_output=True, text=True, check=True).stdout)
    rules = [item["rule"] for item in out["nftables"] if "rule" in item]
    return sum(e["counter"]["packets"] for r in rules for e in r["expr"] if "counter" in e)


def tracked(lab: Lab, qube: str, src: str, first_sport: int) -> bool:
    argv = ["conntrack", "-L", "-p", "tcp", "--orig-src", src]
    out = lab.run(qube, argv, capture_output=True, text=True).stdout
    return any(f"sport={first_sport + i} " in out for i in range(SPOOFS))


def test_spoofed_sources_from_downstream_are_dropped_before_any_forward(env: Env) -> None:
    lab = env.lab
    for qube in ("work", "personal"):
        lab.run(qube, ["nft", "-f", "-"], input=NO_OWN_NAT, text=True, check=True)
    with peer_server(lab, "work", "tcp", 8082):
        before = antispoof_drops(lab, "sys-firewall")
        # work claims personal's address for personal's internal forward ...
        send_syns(lab, "work", PERSONAL4, SYS_FIREWALL4, 8443, 41000)
        # ... and the allowed LAN client's address for its external forward, via the edge.
        send_syns(lab, "work", LAN4, lab.addresses.edge_lan4, 80, 41100)
        assert wait_for(lambda: antispoof_drops(lab, "sys-firewall") >= before + 2 * SPOOFS, 5)
        # The same packets from their true owner are tracked (and DNATed) at once.
        send_syns(lab, "personal", PERSONAL4, SYS_FIREWALL4, 8443, 41200)
        assert wait_for(lambda: tracked(lab, "sys-firewall", PERSONAL4, 41200), 5)
        assert not tracked(lab, "sys-firewall", PERSONAL4, 41000)
        assert not tracked(lab, "sys-firewall", LAN4, 41100)
        assert not tracked(lab, "sys-net", LAN4, 41100)
