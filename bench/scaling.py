"""Measurement 2: set-up latency and throughput against the number of forwards installed.

For each count and each design (our maps, linear rules) the edge's whole ruleset is
replaced, connection tables flushed, then the forward under test is measured.
"""

from typing import Any

from . import layout
from .chain import Chain
from .clients import connections, iperf
from .rulesets import Design, edge_script
from .settings import Settings
from .stats import median, median_of_summaries, ratio, summarize

TARGET_RATIO = 1.10  # ours at the largest count within 10 % of ours at 1 (latency)
TARGET_THROUGHPUT_RATIO = 0.90  # and within 10 % the other way for throughput


def measure(chain: Chain, settings: Settings) -> dict[str, Any]:
    edge = str(layout.EDGE_LAN)
    cells: dict[tuple[Design, int], dict[str, list[Any]]] = {
        (d, n): {"connect": [], "gbits": [], "load_s": [], "failures": []}
        for d in Design
        for n in settings.forward_counts
    }
    scripts = {key: edge_script(*key) for key in cells}
    for repeat in range(settings.repeats):
        order = list(cells) if repeat % 2 == 0 else list(reversed(cells))
        for key in order:
            cell = cells[key]
            cell["load_s"].append(chain.load("net", scripts[key]))
            chain.flush_conntrack()
            latencies = connections(chain, edge, layout.LATENCY_PORT, settings.connections)
            cell["failures"].append(latencies.failures)
            if latencies.connect_s:
                cell["connect"].append(summarize(latencies.connect_s).scaled(1e6))
            result = iperf(
                chain, edge, layout.IPERF_PORT, settings.iperf_seconds, settings.iperf_omit
            )
            cell["gbits"].append(result.gbits)
    chain.load("net", edge_script(Design.MAP, 1))
    designs: dict[str, dict[str, Any]] = {d.value: {} for d in Design}
    for (design, count), cell in cells.items():
        designs[design.value][str(count)] = {
            "connect_us": median_of_summaries(cell["connect"]).to_json()
            if cell["connect"]
            else None,
            "gbits": cell["gbits"],
            "gbits_median": median(cell["gbits"]),
            "nft_load_s_median": median(cell["load_s"]),
            "connection_failures": sum(cell["failures"]),
        }
    return {"counts": list(settings.forward_counts), "designs": designs, **_verdict(designs)}


def _verdict(designs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ours = designs[Design.MAP.value]
    counts = sorted(ours, key=int)
    smallest, largest = ours[counts[0]], ours[counts[-1]]

    def connect_mean(cell: dict[str, Any]) -> float | None:
        return None if cell["connect_us"] is None else cell["connect_us"]["mean"]

    latency_ratio = ratio(connect_mean(largest), connect_mean(smallest))
    throughput_ratio = ratio(largest["gbits_median"], smallest["gbits_median"])
    return {
        "ratio_latency_largest_vs_1": latency_ratio,
        "ratio_gbits_largest_vs_1": throughput_ratio,
        "target_ratio": TARGET_RATIO,
        "target_throughput_ratio": TARGET_THROUGHPUT_RATIO,
        "met": latency_ratio is not None
        and latency_ratio <= TARGET_RATIO
        and throughput_ratio is not None
        and throughput_ratio >= TARGET_THROUGHPUT_RATIO,
    }
