"""Where convergence time goes: each stage of one change, timed alone on the same forwards.

Stages as the admin service and the edge's agent run them: parse the Set payload, bind and
store firewall.xml, plan, write the edge's entries, parse them in the agent, compile, `nft
-f` into Qubes' base rules (with nft's peak memory), and the `nft -j list ruleset` plus
fingerprint of a check (the agent takes them only without the kernel's notifications:
after each apply and on each timed check).
"""

import asyncio
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from qubes_lab.entry_store import EntryStore
from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_lab.qubesd.firewall_xml import load_firewall, save_firewall
from qubes_portfwd.agent.entries import parse_entries
from qubes_portfwd.agent.nft_runner import NftRunner
from qubes_portfwd.agent.owned import owned_fingerprint
from qubes_portfwd.controller.forward_binding import bind_rule
from qubes_portfwd.controller.publisher import OWNED_PREFIXES, owned
from qubes_portfwd.model.rule import Rule
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import parse_owned_jumps
from qubes_portfwd.planner import plan

from .chain import run
from .processes import BenchError

T = TypeVar("T")
BOOT_ID = "00000000-0000-4000-8000-000000000000"


def _timed(stages: dict[str, float], name: str, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = work()
    stages[name] = time.perf_counter() - started
    return result


def _nft(netns: str, args: list[str], stdin: str | None = None) -> tuple[float, int, str]:
    """Seconds, peak resident KiB (GNU time) and stdout of one nft run inside netns."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        argv = ["ip", "netns", "exec", netns, "/usr/bin/time", "-o", report.name, "-f", "%e %M"]
        started = time.perf_counter()
        out = run([*argv, "nft", *args], stdin=stdin)
        took = time.perf_counter() - started
        fields = Path(report.name).read_text().split()
    return took, int(fields[-1]), out


def measure(
    lines: Mapping[str, list[str]], topology: Topology, edge: str, scratch_netns: str
) -> dict[str, Any]:
    """Stage timings for the forwards in `lines`; nft runs in `scratch_netns` (empty, ours)."""
    stages: dict[str, float] = {}
    now = time.time()
    every_line = [line for forwards in lines.values() for line in forwards]
    _timed(stages, "admin: parse rule text", lambda: [parse_rule(line) for line in every_line])
    rules: dict[str, tuple[Rule, ...]] = {
        target: tuple(bind_rule(parse_rule(line), target, topology, BOOT_ID) for line in forwards)
        for target, forwards in lines.items()
    }
    with tempfile.TemporaryDirectory(prefix="qpt-bench-") as temp:
        root = Path(temp)

        def store_all() -> None:
            for target, target_rules in rules.items():
                save_firewall(root / f"{target}.xml", target_rules, now, BOOT_ID)

        _timed(stages, "admin: write firewall.xml", store_all)
        _timed(  # only when the service starts: a change keeps what it wrote in memory
            stages,
            "admin: read firewall.xml (start)",
            lambda: [load_firewall(root / f"{t}.xml") for t in rules],
        )
        planned = _timed(stages, "admin: plan", lambda: plan(rules, topology, now, BOOT_ID))
        entries = owned(planned.entries.get(edge, {}))
        store = EntryStore(root / "store")
        _timed(
            stages,
            f"admin: write {edge}'s entries",
            lambda: store.replace_prefixes(OWNED_PREFIXES, entries),
        )
        _timed(stages, f"agent: read {edge}'s entries", store.read)
    parsed = _timed(stages, "agent: parse entries", lambda: parse_entries(entries))
    edge_base = base_ruleset(BaseParams(provides_network=True, ipv6=True))
    run(
        ["ip", "netns", "exec", scratch_netns, "nft", "-f", "-"],
        stdin="flush ruleset\n" + edge_base,
    )
    runner = NftRunner(("ip", "netns", "exec", scratch_netns))
    listed = _timed(
        stages,
        "agent: nft -j list custom chains",
        lambda: asyncio.run(runner.list_custom_chains_json()),
    )
    base_json = listed.output
    compiled = _timed(
        stages,
        "agent: compile",
        lambda: compile_qube(
            QubeRules(hops=parsed.hops),
            parse_owned_jumps(base_json),
        ),
    )
    if compiled.skipped:
        raise BenchError(f"compiler left out {len(compiled.skipped)} hops of {edge}")
    load_s, load_peak_kib, _ = _nft(scratch_netns, ["-f", "-"], compiled.script)
    stages["agent: nft -f"] = load_s
    list_s, list_peak_kib, listing = _nft(scratch_netns, ["-j", "list", "ruleset"])
    stages["agent: nft -j list ruleset (check)"] = list_s
    _timed(stages, "agent: fingerprint (check)", lambda: owned_fingerprint(listing))
    return {
        "edge": edge,
        "edge_entries": len(entries),
        "script_bytes": len(compiled.script),
        "stages_s": stages,
        "nft_peak_rss_kib": {"load": load_peak_kib, "list": list_peak_kib},
    }
