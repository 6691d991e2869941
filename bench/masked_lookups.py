"""LAN-sized sources out of pipapo (issue 17): old interval shape vs masked hash lookups.

    python -m bench.masked_lookups [--repeats 3] [--connects 300] [--out FILE]

1. `nft -f` of a sys-firewall-sized ruleset (8,343 forwards, one port each) into Qubes'
   base rules in a fresh namespace: /24 sources in the old shape (every network in the
   interval sets), /24 sources in the new shape, and single source addresses.
2. connect() latency through client -> netvm -> target namespaces, the netvm holding 1 or
   10,000 forwards with /24 sources (old and new shape), the measured one last.
Medians over repeats, the variants interleaved in each repeat (the machine is shared).
Needs root; every namespace is ours (`qpt-h17b-<pid>-<n>`) and deleted by name.
"""

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_portfwd.model.entries import Hop, parse_hop
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.lookups import MAX_MASKED_LENGTHS
from qubes_portfwd.nft.owned import parse_owned_jumps

SYS_FIREWALL_ENTRIES = 8343
LATENCY_FORWARDS = 10_000
TARGET = "10.137.0.5"
NETVM_OUTSIDE = "192.0.2.1"
CLIENT = "192.0.2.2"
TIMEOUT = 120
_names = iter(range(1_000_000))


def sh(ns: str, *argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns}: {done.stderr.strip()}")
    return done.stdout


@contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    made: list[str] = []
    try:
        for _ in range(count):
            name = f"qpt-h17b-{os.getpid()}-{next(_names)}"
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
            made.append(name)
            sh(name, "ip", "link", "set", "lo", "up")
        yield made
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def hop(n: int, port: int, source: str, toport: int | None = None) -> Hop:
    value = (
        f"role=dnat family=4 proto=tcp in=eth0 ports={port}-{port} to={TARGET} "
        f"toports={toport or port}-{toport or port} srchost={source}"
    )
    return parse_hop(f"/qubes-portfwd/{n:012x}/4", value)


def lan(n: int) -> str:
    """A distinct /24 per forward, as LANs of many users would be."""
    return f"10.{n // 250 % 250}.{n % 250}.0/24"


def script(ns: str, hops: Sequence[Hop], max_masked: int) -> str:
    owned = parse_owned_jumps(sh(ns, "nft", "-j", "list", "ruleset"))
    compiled = compile_qube(QubeRules(hops=tuple(hops)), owned, max_masked=max_masked)
    if compiled.skipped:
        raise RuntimeError(f"{len(compiled.skipped)} hops left out")
    return compiled.script


def load_seconds(hops: Sequence[Hop], max_masked: int) -> float:
    """`nft -f` of the compiled hops into a fresh namespace with Qubes' base rules."""
    with namespaces(1) as (ns,):
        sh(ns, "nft", "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, ipv6=True)))
        text = script(ns, hops, max_masked)
        started = time.perf_counter()
        sh(ns, "nft", "-f", "-", stdin=text)
        return time.perf_counter() - started


def nft_load(repeats: int) -> dict[str, float]:
    """Seconds per variant: the convergence workload's one LAN for every forward, a
    distinct /24 per forward, and single addresses (the old fast case)."""
    count = SYS_FIREWALL_ENTRIES
    one_lan = [hop(n, 20000 + n, "192.0.2.0/24") for n in range(count)]
    many_lans = [hop(n, 20000 + n, lan(n)) for n in range(count)]
    single = [hop(n, 20000 + n, lan(n).replace(".0/24", ".7/32")) for n in range(count)]
    variants = {
        "one /24 for all, old shape (interval)": (one_lan, 0),
        "one /24 for all, new shape (masked hash)": (one_lan, MAX_MASKED_LENGTHS),
        "distinct /24s, old shape (interval)": (many_lans, 0),
        "distinct /24s, new shape (masked hash)": (many_lans, MAX_MASKED_LENGTHS),
        "single addresses": (single, MAX_MASKED_LENGTHS),
    }
    taken: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (hops, max_masked) in variants.items():
            taken[name].append(load_seconds(hops, max_masked))
    return {name: statistics.median(values) for name, values in taken.items()}


CONNECTS = """
import json, socket, sys, time
took = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.settimeout(3)
    s.bind((sys.argv[2], 0))
    started = time.perf_counter()
    s.connect((sys.argv[3], 80))
    took.append(time.perf_counter() - started)
    s.close()
print(json.dumps(took))
"""
SERVER = """
import socket
server = socket.create_server(("0.0.0.0", 8080), backlog=1024)
while True:
    conn, _ = server.accept()
    conn.close()
"""


@contextmanager
def path() -> Iterator[tuple[str, str]]:
    """client -- eth0 [netvm] vif5.0 -- eth0 [target, listening on 8080]: (client, netvm)."""
    with namespaces(3) as (client, netvm, target):
        sh(
            client,
            "ip",
            "link",
            "add",
            "c0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netvm,
        )
        sh(netvm, "ip", "link", "add", "vif5.0", "type", "veth", "peer", "name", "eth0",
           "netns", target)  # fmt: skip
        sh(client, "ip", "addr", "add", f"{CLIENT}/24", "dev", "c0")
        sh(client, "ip", "link", "set", "c0", "up")
        sh(netvm, "ip", "addr", "add", f"{NETVM_OUTSIDE}/24", "dev", "eth0")
        sh(netvm, "ip", "link", "set", "eth0", "group", "1", "up")
        sh(netvm, "ip", "addr", "add", "10.137.0.1/32", "dev", "vif5.0")
        sh(netvm, "ip", "link", "set", "vif5.0", "group", "2", "up")
        sh(netvm, "ip", "route", "add", f"{TARGET}/32", "dev", "vif5.0")
        sh(netvm, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(target, "ip", "addr", "add", f"{TARGET}/32", "dev", "eth0")
        sh(target, "ip", "link", "set", "eth0", "up")
        sh(target, "ip", "route", "add", "10.137.0.1/32", "dev", "eth0")
        sh(target, "ip", "route", "add", "default", "via", "10.137.0.1", "dev", "eth0", "onlink")
        vif = Downstream("vif5.0", ipaddress.IPv4Address(TARGET))
        base = base_ruleset(BaseParams(provides_network=True, downstream=(vif,)))
        sh(netvm, "nft", "-f", "-", stdin=base)
        server = subprocess.Popen(
            ["ip", "netns", "exec", target, sys.executable, "-c", SERVER],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while ":8080 " not in sh(target, "ss", "-Hltn"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the target's listener did not start")
                time.sleep(0.05)
            yield client, netvm
        finally:
            server.terminate()
            server.wait(timeout=10)


def latency_hops(count: int) -> list[Hop]:
    """`count - 1` background forwards, each its /24 and port, then the measured one."""
    hops = [hop(n, 10000 + n, lan(n)) for n in range(count - 1)]
    return [*hops, hop(0xFFFFFFFF, 80, "192.0.2.0/24", 8080)]


def connect_us(client: str, count: int) -> float:
    out = sh(client, sys.executable, "-c", CONNECTS, str(count), CLIENT, NETVM_OUTSIDE)
    return statistics.median(json.loads(out)) * 1e6


def connect_latency(repeats: int, connects: int) -> dict[str, float]:
    variants = {
        "1 forward": (1, MAX_MASKED_LENGTHS),
        f"{LATENCY_FORWARDS:,} forwards, old shape": (LATENCY_FORWARDS, 0),
        f"{LATENCY_FORWARDS:,} forwards, new shape": (LATENCY_FORWARDS, MAX_MASKED_LENGTHS),
    }
    taken: dict[str, list[float]] = {name: [] for name in variants}
    with path() as (client, netvm):
        for _ in range(repeats):
            for name, (count, max_masked) in variants.items():
                sh(netvm, "nft", "-f", "-", stdin=script(netvm, latency_hops(count), max_masked))
                connect_us(client, 20)  # warm: neighbours, caches
                taken[name].append(connect_us(client, connects))
    return {name: statistics.median(values) for name, values in taken.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connects", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 20 or not 10 <= args.connects <= 5000:
        parser.error("--repeats: 1-20, --connects: 10-5000")
    load = nft_load(args.repeats)
    latency = connect_latency(args.repeats, args.connects)
    print(f"nft -f of {SYS_FIREWALL_ENTRIES:,} forwards (median of {args.repeats}):")
    for name, seconds in load.items():
        print(f"  {name:45} {seconds:7.2f} s")
    print(f"connect() through the netvm, median us ({args.repeats} x {args.connects}):")
    for name, micros in latency.items():
        print(f"  {name:45} {micros:7.0f} us")
    if args.out is not None:
        args.out.write_text(json.dumps({"nft_load_s": load, "connect_us": latency}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
