"""Support for the stock-firewall test (no tests here): three namespaces of our own (the
outside, a network qube `fwq`, a qube `work` behind it), real QubesDB for both qubes, and
TCP servers and connects inside them, every wait bounded."""

import ipaddress
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qubes_lab import netns
from qubes_lab.qubesdb_real import QubeSide, RealQubesDB
from qubes_lab.stock_firewall import load_base_rules, vif_online
from qubes_portfwd.adapters.qubesdb_binding import QubesDbBinding

WAIT = 20.0  # bound on every wait for a worker's or an agent's answer
CONNECT_TIMEOUT = 2.0
OUTSIDE_IP, UPLINK_IP = "192.0.2.1", "192.0.2.2"  # TEST-NET-1: the outside and fwq's eth0
FWQ_IP, WORK_IP = ipaddress.IPv4Address("10.137.0.2"), ipaddress.IPv4Address("10.137.0.5")
FWQ_DOMID, WORK_DOMID = 2, 5
VIF = f"vif{WORK_DOMID}.0"  # Qubes' name: the worker only filters interfaces named vif*

SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall((peer[0] + "\n").encode())
    c.close()
"""

CONNECT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
        print(c.recv(100).decode().strip())
except OSError as err:
    print("failed:", err)
"""


@dataclass(frozen=True)
class Topology:
    """The namespaces' names (unique to this run) and both qubes' real QubesDB."""

    outside: str
    fwq_ns: str
    work_ns: str
    fwq: QubeSide
    work: QubeSide


@contextmanager
def topology(qubesdb: RealQubesDB, workdir: Path) -> Iterator[Topology]:
    """outside --(eth0)-- fwq --(vif5.0 | eth0)-- work, with Qubes' base rules in both
    qubes and Qubes' hotplug script run for the vif; every namespace made here is removed
    after QubesDB stopped."""
    tag = f"hd{os.getpid() % 100000}"
    names = [f"{tag}out", f"{tag}fwq", f"{tag}work"]
    made: list[str] = []
    try:
        for name in names:
            netns.add(name)
            made.append(name)
        outside, fwq_ns, work_ns = names
        _wire(outside, fwq_ns, work_ns)
        fwq = qubesdb.add_qube("fwq", FWQ_DOMID, netns=fwq_ns)
        work = qubesdb.add_qube("work", WORK_DOMID, netns=work_ns)
        for qube in (fwq, work):
            load_base_rules(qube)  # as every qube with networking loads them at boot
        _netvm_keys(qubesdb, fwq)
        vif_online(fwq, VIF, [WORK_IP], _mac(work_ns, "eth0"), workdir)
        yield Topology(outside, fwq_ns, work_ns, fwq, work)
    finally:
        qubesdb.stop()  # before the namespaces go: nothing of ours may hold them
        for name in reversed(made):
            netns.delete(name)


def _wire(outside: str, fwq: str, work: str) -> None:
    netns.run(["ip", "link", "add", "up0", "netns", outside, "type", "veth", "peer", "eth0",
               "netns", fwq])  # fmt: skip
    netns.run(["ip", "link", "add", VIF, "netns", fwq, "type", "veth", "peer", "eth0",
               "netns", work])  # fmt: skip
    netns.ip_batch(outside, [f"addr add {OUTSIDE_IP}/24 dev up0", "link set up0 up"])
    netns.ip_batch(
        fwq,
        [
            f"addr add {UPLINK_IP}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {OUTSIDE_IP}",
            "link set eth0 group 1",  # Qubes' setup-ip: the uplink is group 1
        ],
    )
    netns.ip_batch(
        work,
        [
            f"addr add {WORK_IP}/32 dev eth0",
            "link set eth0 up",
            f"route add {FWQ_IP}/32 dev eth0",
            f"route add default via {FWQ_IP}",
            "link set eth0 group 1",
        ],
    )
    netns.sysctls(fwq, {"net/ipv4/ip_forward": "1"})


def _netvm_keys(qubesdb: RealQubesDB, fwq: QubeSide) -> None:
    """What core-admin writes into a network qube's QubesDB that vif-route-qubes reads
    (its own address as its qubes' gateway, Qubes' virtual DNS), waited for in the qube."""
    own = fwq.open()
    last = "/qubes-netvm-secondary-dns"
    own.watch(last)
    dom0 = dom0_db(qubesdb, fwq.name)
    dom0.write("/qubes-netvm-gateway", str(FWQ_IP).encode())
    dom0.write("/qubes-netvm-primary-dns", b"10.139.1.1")
    dom0.write(last, b"10.139.1.2")
    assert select.select([own.watch_fd()], [], [], WAIT)[0], "the netvm's keys did not arrive"
    assert own.read_watch() == last


def _mac(ns: str, link: str) -> str:
    (shown,) = json.loads(netns.run(["ip", "-n", ns, "-j", "link", "show", link]))
    return str(shown["address"])


def dom0_db(qubesdb: RealQubesDB, qube: str) -> QubesDbBinding:
    """Dom0's handle on `qube`'s QubesDB through the product's adapter."""
    return qubesdb.call_in_dom0(lambda: QubesDbBinding(qube))


def wait_for(watcher: QubesDbBinding, path: str, condition: Callable[[], Any], what: str) -> Any:
    """`condition()` once truthy, re-checked whenever dom0's watch on `path` fires; the
    watching handle does nothing else, so no event is held back inside the binding."""
    watcher.watch(path)
    deadline = time.monotonic() + WAIT
    while not (result := condition()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{what}: not within {WAIT} s")
        if select.select([watcher.watch_fd()], [], [], remaining)[0]:
            watcher.read_watch()
    return result


@contextmanager
def server(ns: str, port: int) -> Iterator[None]:
    """A TCP server in `ns` answering each connection with the peer's address."""
    process = subprocess.Popen(
        netns.exec_argv(ns, [sys.executable, "-c", SERVER, str(port)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = select.select([process.stdout], [], [], WAIT)[0]
        assert ready and process.stdout.readline() == "ready\n", f"server {ns}:{port}"
        yield
    finally:
        process.kill()  # `ip netns exec` execs: this PID is the server's own
        process.wait(timeout=WAIT)
        if process.stdout is not None:
            process.stdout.close()


def connect(ns: str, address: str, port: int) -> str | None:
    """The peer address the server saw, or None when the connection failed."""
    done = subprocess.run(
        netns.exec_argv(
            ns, [sys.executable, "-c", CONNECT, address, str(port), str(CONNECT_TIMEOUT)]
        ),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    answer = done.stdout.strip()
    return None if done.returncode != 0 or answer.startswith("failed:") else answer


def table_handles(ns: str, name: str) -> list[int]:
    """The kernel's handles of `ip|ip6 name`: a table made anew gets a new one."""
    listed = json.loads(netns.run_in(ns, ["nft", "-j", "list", "tables"]))["nftables"]
    return sorted(i["table"]["handle"] for i in listed if i.get("table", {}).get("name") == name)


def qubes_own(ns: str) -> str:
    """Qubes' own part of its `qubes` tables (base chains, their rules, the antispoof sets),
    without handles and counters: what neither the worker nor our agent may change."""
    items = json.loads(netns.run_in(ns, ["nft", "-j", "list", "ruleset"]))["nftables"]
    kept = []
    for item in items:
        ((kind, body),) = item.items()
        if kind not in ("chain", "rule", "set") or body.get("table") != "qubes":
            continue
        name = body.get("chain" if kind == "rule" else "name", "")
        if name.startswith("portfwd-") or (name.startswith("custom-") and kind == "rule"):
            continue
        kept.append({kind: {k: v for k, v in body.items() if k != "handle"}})
    return re.sub(r'"(packets|bytes)": \d+', r'"\1": 0', json.dumps(kept, sort_keys=True))
