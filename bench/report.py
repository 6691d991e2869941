"""The results as a printed table (pure: a results document in, text out)."""

from collections.abc import Sequence
from typing import Any

MISSING = "-"


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Columns padded to their widest cell; the first left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(padded)).rstrip()

    return [line(headers), indent + "  ".join("-" * w for w in widths), *map(line, rows)]


def num(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value:,.{digits}f}"


def verdict(section: dict[str, Any], target: str) -> str:
    return f"target {target}: {'met' if section.get('met') else 'MISSED'}"


def _field(summary: dict[str, Any] | None, key: str) -> float | None:
    return None if summary is None else summary.get(key)


def throughput_lines(section: dict[str, Any]) -> list[str]:
    routed = section["gbits_median"]["routed"]
    rows = []
    for path, gbits in section["gbits_median"].items():
        first_byte = section["first_byte_us"].get(path)
        rows.append(
            [
                path,
                num(gbits, 2),
                num(min(section["gbits"][path]), 2),
                num(max(section["gbits"][path]), 2),
                num(_field(first_byte, "p50"), 0),
                num(gbits / routed if routed else None, 3),
            ]
        )
    headers = ["path", "Gbit/s", "min", "max", "1st byte p50 us", "x routed"]
    ratio = section["ratio_forward_routed"]
    return [
        "1. Throughput, one TCP stream lan -> work (median of repeats)",
        *render(headers, rows),
        f"  forward / routed = {num(ratio, 3)}; "
        + verdict(section, f">= {section['target_ratio']}"),
    ]


def scaling_lines(section: dict[str, Any]) -> list[str]:
    ours, linear = section["designs"]["map"], section["designs"]["linear"]
    rows = []
    for count in section["counts"]:
        a, b = ours[str(count)], linear[str(count)]
        rows.append(
            [
                f"{count:,}",
                num(_field(a["connect_us"], "mean"), 0),
                num(_field(a["connect_us"], "p99"), 0),
                num(a["gbits_median"], 2),
                num(_field(b["connect_us"], "mean"), 0),
                num(_field(b["connect_us"], "p99"), 0),
                num(b["gbits_median"], 2),
                f"{num(a['nft_load_s_median'] * 1e3, 0)}/{num(b['nft_load_s_median'] * 1e3, 0)}",
            ]
        )
    headers = [
        "forwards",
        "maps: us mean",
        "p99",
        "Gbit/s",
        "linear: us mean",
        "p99",
        "Gbit/s",
        "nft -f ms maps/linear",
    ]
    return [
        "2. Rule-count scaling: connect() latency and throughput of the forward added last",
        *render(headers, rows),
        f"  maps, largest vs 1 forward: latency x{num(section['ratio_latency_largest_vs_1'], 3)},"
        f" throughput x{num(section['ratio_gbits_largest_vs_1'], 3)}; "
        + verdict(
            section,
            f"latency <= x{section['target_ratio']}, "
            f"throughput >= x{section.get('target_throughput_ratio', 0.9)}",
        ),
    ]


def propagation_lines(section: dict[str, Any]) -> list[str]:
    rows = []
    for label, key in (
        ("add_forward call", "call_ms"),
        ("after it returned", "after_return_ms"),
        ("call to 1st connection", "call_to_first_connection_ms"),
    ):
        summary = section.get(key)
        rows.append(
            [
                label,
                num(_field(summary, "p50")),
                num(_field(summary, "p99")),
                num(_field(summary, "maximum")),
            ]
        )
    return [
        f"3. Propagation over {section['adds']} adds, 3-qube chain (ms)",
        *render(["", "p50", "p99", "max"], rows),
        f"  failures {section['failures']}; "
        + verdict(
            section,
            f"call to 1st connection p50 <= {section['target_p50_ms']:g} ms, "
            f"p99 <= {section.get('target_p99_ms', 80.0):g} ms",
        ),
    ]


def convergence_lines(section: dict[str, Any], breakdown: dict[str, Any] | None) -> list[str]:
    cold = section["cold_reapply"]
    restart = section["restart"]
    peaks = section["peak_rss_kib"]
    lines = [
        f"4. Convergence of {section['forwards']:,} forwards across the host",
        f"  stored as features while the service was stopped "
        f"({num(section['stored_offline_s'], 2)} s); service start -> all hops applied: "
        f"{num(section['converge_s'], 2)} s",
        f"  admin restart, entries kept: answers {num(restart['answers_s'], 2)} s, listing "
        f"complete {num(restart['listing_complete_s'], 2)} s",
        f"  cold re-apply (admin restart, qubes' entries lost): answers "
        f"{num(cold['answers_s'], 2)} s, all hops applied {num(cold['converge_s'], 2)} s",
        "  peak RSS MiB: " + ", ".join(f"{role} {num(kib / 1024)}" for role, kib in peaks.items()),
        "  " + verdict(section, f"<= {section['target_s']:g} s"),
    ]
    timeline = section.get("timeline_s", {})
    if timeline:
        rows = [[q, num(t["published_s"], 2), num(t["applied_s"], 2)] for q, t in timeline.items()]
        lines += ["  last write per qube (s after the service's start):"]
        lines += render(["qube", "published", "applied"], rows, indent="    ")
    return lines + breakdown_lines(breakdown)


def breakdown_lines(breakdown: dict[str, Any] | None) -> list[str]:
    if not breakdown or "stages_s" not in breakdown:
        return []
    rows = [[stage, num(s * 1e3, 0)] for stage, s in breakdown["stages_s"].items()]
    peaks = breakdown["nft_peak_rss_kib"]
    return [
        f"  stages of one change, timed alone ({breakdown['edge_entries']:,} entries at "
        f"{breakdown['edge']}; nft peak RSS MiB: load {num(peaks['load'] / 1024)}, "
        f"list {num(peaks['list'] / 1024)}):",
        *render(["stage", "ms"], rows, indent="    "),
    ]


REST_HEADERS = ["process", "CPU %", "RSS MiB", "with children MiB", "wakeups/s"]


def _rest_rows(window: dict[str, Any], ours: Sequence[str] | None) -> list[list[str]]:
    """One row per sampled process; the lab's own stand-ins (not the product) are marked."""
    return [
        [
            name if ours is None or name in ours else f"{name} (lab)",
            num(p["cpu_percent"], 2),
            num(p["rss_kib"] / 1024),
            num(p["tree_rss_kib"] / 1024),
            num(p.get("wakeups_per_s"), 1),
        ]
        for name, p in window.items()
    ]


def rest_lines(section: dict[str, Any]) -> list[str]:
    rest = section["rest"]
    ours = rest.get("ours")
    lines = [
        f"5. At rest with {section['forwards']:,} forwards (CPU and wakeups over "
        f"{rest['window_s']:g} s)",
        *render(REST_HEADERS, _rest_rows(rest["processes"], ours)),
    ]
    if "later" in rest:
        lines += [
            f"  the same over {rest.get('later_window_s', rest['window_s']):g} s, "
            f"{rest['later_start_s']:g} s after convergence (the verdict):",
            *render(REST_HEADERS, _rest_rows(rest["later"], ours)),
        ]
    return lines


def add_scaling_lines(section: dict[str, Any]) -> list[str]:
    rows = []
    for count, phase in section["phases"].items():
        total = phase.get("call_to_first_connection_ms")
        rows.append(
            [
                f"{int(count):,}",
                num(_field(phase["call_ms"], "p50")),
                num(_field(phase["call_ms"], "p99")),
                num(_field(total, "p50")),
                num(_field(total, "p99")),
                str(phase["failures"]),
                num(phase["load_s"], 1),
            ]
        )
    headers = ["forwards", "call p50 ms", "p99", "to 1st conn p50", "p99", "failed", "Sets s"]
    small, large = section["loads"]
    return [
        f"Add latency against the forwards on the host ({section['phases'][str(small)]['adds']}"
        f" adds on {section['target_qube']} at each load)",
        *render(headers, rows),
        f"  add call p50 at {large:,} / at {small:,} = {num(section['ratio_add_p50'], 3)}; "
        + verdict(section, f"<= x{section['target_ratio']:g}"),
    ]


TARGET_DIGITS = {"x": 3, "processes": 0, "ms": 1, "MB": 1}


def targets_lines(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The table of issue 17's targets, one row per entry of `results["targets"]`; each
    entry's detail follows its row unpadded (it is free text, often long)."""
    rows = [
        [
            e["name"],
            num(e["measured"], TARGET_DIGITS.get(e["unit"], 2)),
            f"{e['compare']} {e['target']:g}",
            e["unit"],
            "met" if e["met"] else "MISSED",
        ]
        for e in entries
    ]
    table = render(["target", "measured", "target", "unit", "verdict"], rows)
    details = ["", "", *(e.get("detail", "") for e in entries)]
    met = sum(1 for e in entries if e["met"])
    return [
        f"Targets (issue 17): {met} of {len(entries)} met",
        *(f"{line}  {detail}".rstrip() for line, detail in zip(table, details, strict=True)),
    ]


def _section(results: dict[str, Any], key: str, lines: Any) -> list[str]:
    section = results.get(key)
    if section is None:
        return []
    if "error" in section:
        return [f"{key}: FAILED: {section['error']}"]
    return lines(section)


def format_report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"qubes-portfwd benchmarks ({results['mode']}): {m['cpu_model']}, {m['cores']} cores, "
        f"kernel {m['kernel']}, {m['nft']}, {m['date']}",
        f"  load average at start {num(m['load_average_at_start'][0], 2)}",
        "",
    ]
    breakdown = results.get("breakdown")
    for key, build in (
        ("throughput", throughput_lines),
        ("scaling", scaling_lines),
        ("propagation", propagation_lines),
        ("convergence", lambda s: [*convergence_lines(s, breakdown), "", *rest_lines(s)]),
    ):
        part = _section(results, key, build)
        if part:
            lines += [*part, ""]
    from .nat_latency import nat_latency_lines  # here: nat_latency formats with this module

    part = _section(results, "nat_latency", nat_latency_lines)
    if part:
        lines += [*part, ""]
    part = _section(results, "add_scaling", add_scaling_lines)
    if part:
        lines += [*part, ""]
    if "convergence" not in results and breakdown is not None:
        lines += ["4. Convergence (stages only)", *breakdown_lines(breakdown), ""]
    if "targets" in results:
        lines += targets_lines(results["targets"])
    return "\n".join(lines).rstrip("\n")
