"""Measurement 1: one TCP stream lan -> work, forwarded vs routed vs relayed, side by side."""

from typing import Any

from . import layout
from .chain import Chain
from .clients import connections, iperf
from .settings import Settings
from .stats import median, median_of_summaries, ratio, summarize

TARGET_RATIO = 0.95  # forward >= 0.95 x routed
# Where lan connects for each path; the service port is offset for the relays.
PATHS: dict[str, tuple[str, int]] = {
    "routed": (str(layout.WORK), 0),
    "forward": (str(layout.EDGE_LAN), 0),
    "relay": (str(layout.EDGE_LAN), layout.RELAY_PORT_OFFSET),
}


def rotated(items: list[str], shift: int) -> list[str]:
    """Each repeat starts with another path, so a drift in load does not favour one."""
    shift %= len(items)
    return items[shift:] + items[:shift]


def measure(chain: Chain, settings: Settings) -> dict[str, Any]:
    gbits: dict[str, list[float]] = {p: [] for p in PATHS}
    retransmits: dict[str, list[int]] = {p: [] for p in PATHS}
    first_byte: dict[str, list[Any]] = {p: [] for p in PATHS}
    failures = dict.fromkeys(PATHS, 0)
    per_repeat_ratio = []
    for repeat in range(settings.repeats):
        for path in rotated(list(PATHS), repeat):
            host, offset = PATHS[path]
            result = iperf(
                chain,
                host,
                layout.IPERF_PORT + offset,
                settings.iperf_seconds,
                settings.iperf_omit,
            )
            gbits[path].append(result.gbits)
            retransmits[path].append(result.retransmits)
            latencies = connections(chain, host, layout.LATENCY_PORT + offset, settings.connections)
            failures[path] += latencies.failures
            if latencies.first_byte_s:
                first_byte[path].append(summarize(latencies.first_byte_s).scaled(1e6))
        per_repeat_ratio.append(ratio(gbits["forward"][-1], gbits["routed"][-1]))
    medians = {p: median(v) for p, v in gbits.items()}
    forward_vs_routed = ratio(medians["forward"], medians["routed"])
    return {
        "gbits": gbits,
        "gbits_median": medians,
        "retransmits": retransmits,
        "first_byte_us": {p: median_of_summaries(s).to_json() for p, s in first_byte.items() if s},
        "connection_failures": failures,
        "ratio_forward_routed": forward_vs_routed,
        "ratio_forward_routed_per_repeat": per_repeat_ratio,
        "ratio_relay_routed": ratio(medians["relay"], medians["routed"]),
        "target_ratio": TARGET_RATIO,
        "met": forward_vs_routed is not None and forward_vs_routed >= TARGET_RATIO,
    }
