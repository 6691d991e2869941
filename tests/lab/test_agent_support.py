"""Support for the agents' end-to-end tests (no tests here): a lab, rules published through
the planner, and real sockets opened inside the lab's namespaces (short timeouts)."""

import ipaddress
import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from servers import CLIENT

from qubes_lab.builder import Lab
from qubes_lab.entry_store import Status
from qubes_lab.qube_db import FileQubeDb
from qubes_lab.qubes_firewall.dom0 import FirewallEntriesWriter
from qubes_lab.qubes_firewall.entries import HANDLED_PREFIX
from qubes_lab.qubesd.state import DEFAULT_RULES
from qubes_portfwd.model.entries import FORWARD_PREFIX
from qubes_portfwd.model.rule import Rule
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.planner import Plan, plan

BOOT_ID = "0123abcd-0000-4000-8000-000000000000"
AGENT_TIMEOUT = 20.0
CONNECT_TIMEOUT = 2.0
OWNED_PREFIXES = (FORWARD_PREFIX,)  # `/qubes-firewall/` is the lab's qubesd's

SERVER = r"""
import socket, sys
proto, family, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
af = socket.AF_INET6 if family == 6 else socket.AF_INET
s = socket.socket(af, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if family == 6 else "0.0.0.0", port))
if proto == "tcp":
    s.listen(64)
print("ready", flush=True)
while True:
    if proto == "tcp":
        c, peer = s.accept()
        c.sendall((peer[0] + "\n").encode())
        c.close()
    else:
        data, peer = s.recvfrom(2048)
        s.sendto((peer[0] + "\n").encode(), peer)
"""

ECHO_SERVER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
def echo(c):
    with c:
        while data := c.recv(1024):
            c.sendall(data)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""

# Sends one line per line of stdin over one connection; prints the echo or FAIL.
ECHO_CLIENT = r"""
import socket, sys
host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=2, source_address=(source, 0))
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        print(s.recv(1024).decode().strip(), flush=True)
    except OSError as e:
        print("FAIL", type(e).__name__, flush=True)
"""

PING = r"""
import os, socket, struct, sys, time
target = sys.argv[1]
ident = os.getpid() & 0xFFFF
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
header = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"qubes-portfwd-ping"
packet = header[:2] + struct.pack("!H", checksum(header)) + header[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(packet, (target, 0))
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        data, peer = s.recvfrom(2048)
    except OSError:
        break
    icmp = data[(data[0] & 0x0F) * 4:]
    if peer[0] == target and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
        print("reply")
        sys.exit(0)
sys.exit(1)
"""

DNS_QUERY = r"""
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(query, (server, 53))
try:
    reply = s.recv(512)
except OSError as e:
    print("FAIL", e)
    sys.exit(1)
print("answer" if reply[:2] == b"\x12\x34" else "garbage")
"""


def publish(lab: Lab, rules_text: Mapping[str, Sequence[str]], *, now: float | None = None) -> Plan:
    """Plan the qubes' rule lists (Admin API text) and publish every qube's entries; the
    accept/drop rules go to the netvms' Qubes worker as core-admin writes them."""
    rules = {qube: [parse_rule(line) for line in lines] for qube, lines in rules_text.items()}
    moment = time.time() if now is None else now
    result = plan(rules, lab.topology, moment, BOOT_ID)
    publish_entries(lab, result.entries)
    publish_outbound(lab, rules, moment)
    return result


def handled_counts(lab: Lab, netvm: str) -> dict[str, bytes]:
    return FileQubeDb(lab.store(netvm).path).multiread(HANDLED_PREFIX)


def wait_worker_handled(
    lab: Lab, netvm: str, before: Mapping[str, bytes], paths: list[str]
) -> None:
    """Until the worker in `netvm` counted each of `paths` handled once more than `before`."""
    db = FileQubeDb(lab.store(netvm).path)
    deadline = time.monotonic() + AGENT_TIMEOUT
    while any(db.read(p) == before.get(p) for p in paths):
        assert time.monotonic() < deadline, f"qubes-firewall in {netvm} did not handle {paths}"
        time.sleep(0.05)  # the pause of a bounded wait


def publish_outbound(lab: Lab, rules: Mapping[str, Sequence[Rule]], now: float) -> None:
    """Every qube's accept/drop rules (Qubes' default for one not in `rules`) into its netvm."""
    topology = lab.topology
    writer = FirewallEntriesWriter(lambda qube: FileQubeDb(lab.store(qube).path))
    listed = {q: rules.get(q, DEFAULT_RULES) for q in topology.qubes}
    for netvm in sorted(q for q in topology.qubes if topology[q].provides_network):
        before = handled_counts(lab, netvm)
        writer.reload_netvm(topology, listed.__getitem__, netvm, now, BOOT_ID)
        paths = [
            f"{HANDLED_PREFIX}{address}"
            for qube in topology.downstream(netvm)
            for address in (qube.address4, qube.address6)
            if address is not None
        ]
        wait_worker_handled(lab, netvm, before, paths)


def publish_entries(lab: Lab, entries: Mapping[str, Mapping[str, str]]) -> dict[str, Status]:
    """Write each qube's entries and wait until every agent has handled them."""
    written = {
        qube: lab.store(qube).replace_prefixes(OWNED_PREFIXES, dict(values))
        for qube, values in entries.items()
    }
    return {
        qube: lab.store(qube).wait_for_handled(generation, AGENT_TIMEOUT)
        for qube, generation in written.items()
    }


def _netns_argv(lab: Lab, place: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", lab.netns(place), *argv]


def read_line(process: subprocess.Popen[str], timeout: float = 10) -> str:
    """The process's next output line, or "" when none comes within `timeout`."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


@contextmanager
def running(lab: Lab, place: str, script: str, *args: object) -> Iterator[subprocess.Popen[str]]:
    """A python one-liner in `place`, stopped by its PID however the test ends."""
    process = subprocess.Popen(
        _netns_argv(lab, place, [sys.executable, "-c", script, *map(str, args)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def server(lab: Lab, place: str, proto: str, port: int, family: int = 4) -> Iterator[None]:
    """A TCP or UDP server in `place` that answers every client with the address it sees."""
    with running(lab, place, SERVER, proto, family, port) as process:
        assert read_line(process) == "ready", f"server in {place} did not start"
        yield


def connect(
    lab: Lab, place: str, proto: str, host: object, port: int, source: object = ""
) -> str | None:
    """What the server answered (the client address it saw), or None when nothing got through."""
    result = subprocess.run(
        _netns_argv(
            lab,
            place,
            [
                sys.executable,
                "-c",
                CLIENT,
                proto,
                str(host),
                str(port),
                str(source),
                str(CONNECT_TIMEOUT),
            ],
        ),
        capture_output=True,
        text=True,
        timeout=CONNECT_TIMEOUT + 10,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ping(lab: Lab, place: str, host: object) -> bool:
    result = subprocess.run(
        _netns_argv(lab, place, [sys.executable, "-c", PING, str(host)]),
        capture_output=True,
        timeout=10,
    )
    return result.returncode == 0


def dns_answers(lab: Lab, place: str, server_address: str, name: str) -> bool:
    result = subprocess.run(
        _netns_argv(lab, place, [sys.executable, "-c", DNS_QUERY, server_address, name]),
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.returncode == 0


@dataclass(frozen=True)
class Addresses:
    """Global addresses of one interface in one namespace."""

    v4: tuple[ipaddress.IPv4Address, ...]
    v6: tuple[ipaddress.IPv6Address, ...]


def addresses(lab: Lab, place: str, device: str | None = None) -> Addresses:
    """Read the real addresses from the namespace, so tests depend on no lab attribute names."""
    argv = ["ip", "-j", "addr", "show", *(["dev", device] if device else [])]
    output = subprocess.run(
        _netns_argv(lab, place, argv), capture_output=True, text=True, check=True, timeout=10
    ).stdout
    v4: list[ipaddress.IPv4Address] = []
    v6: list[ipaddress.IPv6Address] = []
    for link in json.loads(output):
        for info in link.get("addr_info", []):
            if info.get("scope") != "global":
                continue
            address = ipaddress.ip_address(info["local"])
            if isinstance(address, ipaddress.IPv4Address):
                v4.append(address)
            else:
                v6.append(address)
    return Addresses(tuple(v4), tuple(v6))


def in_network(found: Sequence[Any], network: str) -> list[Any]:
    net = ipaddress.ip_network(network)
    return [a for a in found if a.version == net.version and a in net]
