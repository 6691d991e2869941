"""One agent apply, the kernel's part: `ip` and `nft` processes against rtnetlink and
libnftables in-process, side by side in one run, at 1 and at 1,000 forwards.

    python -m bench.agent_apply [--repeats 20] [--forwards 1,1000]

Needs root: it makes a throwaway namespace (`qpt-apply-<pid>`) with an uplink and a
downstream vif, loads Qubes' base rules there, and runs itself inside it, as the agent runs.
Each repeat is what the agent does per apply: read the addresses, look up the routes to the
DNAT targets, list Qubes' custom chains, compile, load the script, then list the ruleset for
the fingerprint. The two paths alternate within each repeat; medians are printed.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.agent.compile import build_script, dnat_targets
from qubes_portfwd.agent.downstream_targets import route_devices
from qubes_portfwd.agent.entries import ParsedEntries, parse_entries, parse_settings
from qubes_portfwd.agent.local_addresses import read_interface_addresses
from qubes_portfwd.agent.nft_library import NftLibrary
from qubes_portfwd.agent.nft_port import NftPort
from qubes_portfwd.agent.nft_runner import NftRunner
from qubes_portfwd.agent.owned import owned_fingerprint
from qubes_portfwd.model.entries import IPAddress

from .stats import median

TARGET = "10.137.0.6"
STAGES = ("addresses", "routes", "list chains", "compile", "load", "list ruleset")
COMMAND_TIMEOUT = 600.0


# ---- the old path's `ip` readers (as the agent had them before rtnetlink) ----


def ip_addresses() -> dict[str, tuple[IPAddress, ...]]:
    import ipaddress

    links = json.loads(subprocess.run(["ip", "-j", "addr", "show"], capture_output=True,
                                      text=True, check=True, timeout=5).stdout)  # fmt: skip
    found: dict[str, tuple[IPAddress, ...]] = {}
    for link in links:
        addresses = {
            ipaddress.ip_address(info["local"])
            for info in link.get("addr_info", [])
            if info.get("scope") == "global"
        }
        if addresses:
            found[link["ifname"]] = tuple(sorted(addresses, key=lambda a: (a.version, a)))
    return found


def ip_routes(addresses: frozenset[IPAddress]) -> dict[IPAddress, str | None]:
    import ipaddress

    wanted = sorted(addresses, key=lambda a: (a.version, int(a)))
    result = subprocess.run(["ip", "-force", "-j", "-batch", "-"], capture_output=True,
                            text=True, input="".join(f"route get {a}\n" for a in wanted),
                            check=False, timeout=5)  # fmt: skip
    found: dict[IPAddress, str | None] = dict.fromkeys(wanted)
    for line in result.stdout.splitlines():
        [route] = json.loads(line)
        if route.get("type", "unicast") == "unicast":
            found[ipaddress.ip_address(route["dst"])] = route["dev"]
    return found


# ---- inside the namespace ----


def entries(count: int) -> dict[str, str]:
    keys = {"/name": "sys-net"}
    for n in range(count):
        keys[f"/qubes-portfwd/{n:012x}/4"] = (
            f"role=dnat family=4 proto=tcp in=eth0 ports={10000 + n}-{10000 + n} "
            f"to={TARGET} toports={20000 + n}-{20000 + n} srchost=0.0.0.0/0"
        )
    return keys


async def one_apply(
    nft: NftPort,
    parsed: ParsedEntries,
    keys: dict[str, str],
    read_addresses: Callable[[], Any],
    read_routes: Callable[[frozenset[IPAddress]], Any],
) -> dict[str, float]:
    """The kernel-facing steps of `Agent.apply`, in its order, each timed."""
    took: dict[str, float] = {}

    async def timed(stage: str, work: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        result = await work
        took[stage] = time.perf_counter() - started
        return result

    addresses = await timed("addresses", asyncio.to_thread(read_addresses))
    devices = await timed("routes", asyncio.to_thread(read_routes, dnat_targets(parsed)))
    listing = await timed("list chains", nft.list_custom_chains_json())
    started = time.perf_counter()
    compiled = build_script(parsed, parse_settings(keys), listing.output, addresses, devices)
    took["compile"] = time.perf_counter() - started
    if compiled.skipped:
        raise SystemExit(f"the compiler left out {len(compiled.skipped)} hops")
    loaded = await timed("load", nft.apply(compiled.script))
    if not loaded.ok:
        raise SystemExit(f"the load failed: {loaded.output}")
    full = await timed("list ruleset", nft.list_ruleset_json())
    started = time.perf_counter()
    owned_fingerprint(full.output)
    took["list ruleset"] += time.perf_counter() - started
    return took


async def inside(counts: list[int], repeats: int) -> dict[str, Any]:
    paths: dict[str, tuple[NftPort, Callable[[], Any], Callable[..., Any]]] = {
        "processes": (NftRunner(), ip_addresses, ip_routes),
        "in-process": (NftLibrary(), read_interface_addresses, route_devices),
    }
    results: dict[str, Any] = {}
    for count in counts:
        keys = entries(count)
        parsed = parse_entries(keys)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for nft, addresses, routes in paths.values():  # warm-up: the first loads
            await one_apply(nft, parsed, keys, addresses, routes)
        for _ in range(repeats):
            for name, (nft, addresses, routes) in paths.items():
                runs[name].append(await one_apply(nft, parsed, keys, addresses, routes))
        results[str(count)] = {
            name: {
                "total_ms": median([sum(r.values()) * 1000 for r in taken]),
                "stages_ms": {s: median([r[s] * 1000 for r in taken]) for s in STAGES},
                "repeats": len(taken),
            }
            for name, taken in runs.items()
        }
    return results


# ---- the driver, in the host's namespace ----


def _ns(ns: str, *argv: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin, text=True, check=True,
                   timeout=COMMAND_TIMEOUT, capture_output=True)  # fmt: skip


def prepare(ns: str) -> None:
    """An edge-like qube: uplink eth0 with an address and a default route, a downstream
    vif6.0 routing the target, Qubes' base rules (IPv4 and IPv6)."""
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    for device, peer in (("eth0", "up0"), ("vif6.0", "work0")):
        _ns(ns, "ip", "link", "add", device, "type", "veth", "peer", "name", peer)
        for name in (device, peer):
            _ns(ns, "ip", "link", "set", name, "up")
    _ns(ns, "ip", "link", "set", "lo", "up")
    _ns(ns, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
    _ns(ns, "ip", "route", "add", "default", "via", "192.0.2.1")
    _ns(ns, "ip", "route", "add", f"{TARGET}/32", "dev", "vif6.0")
    _ns(ns, "nft", "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, ipv6=True)))


def table(results: dict[str, Any]) -> str:
    lines = ["| forwards | path | apply ms (median) | " + " | ".join(STAGES) + " |"]
    lines.append("|---" * (3 + len(STAGES)) + "|")
    for count, paths in results.items():
        for name, result in paths.items():
            stages = " | ".join(f"{result['stages_ms'][s]:.2f}" for s in STAGES)
            lines.append(f"| {count} | {name} | {result['total_ms']:.2f} | {stages} |")
        ratio = paths["processes"]["total_ms"] / paths["in-process"]["total_ms"]
        lines.append(f"| {count} | processes / in-process | x{ratio:.2f} |" + " |" * len(STAGES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_apply", description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--forwards", default="1,1000", help="comma-separated counts")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.forwards.split(",")]
    if args.inside:
        print(json.dumps(asyncio.run(inside(counts, args.repeats))))
        return 0
    ns = f"qpt-apply-{os.getpid()}"
    try:
        prepare(ns)
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.agent_apply", "--inside",
             "--repeats", str(args.repeats), "--forwards", args.forwards],
            capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT,
        ).stdout  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)
    results = json.loads(out)
    print(table(results))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
