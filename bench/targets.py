"""Issue 17's targets as entries, from one run's results (pure: results in, entries out).

Each entry has `name`, `measured`, `target`, `unit`, `met`, and `compare` (`<=` or `>=`) and
`detail` (what the number is, or why it is missing). A measurement that failed or did not
run gives its entries with `measured` null and `met` false, so the list is always complete.
"""

from typing import Any

MB = 1e6 / 1024  # KiB per MB (10^6 bytes): the issue states RSS in MB

Entry = dict[str, Any]


def entry(
    name: str, measured: float | None, target: float, unit: str, compare: str, detail: str = ""
) -> Entry:
    """One target; met only with a measured value on the right side of the target."""
    if compare not in ("<=", ">="):
        raise ValueError(f"compare must be <= or >=, not {compare!r}")
    met = measured is not None and (measured <= target if compare == "<=" else measured >= target)
    return {
        "name": name,
        "measured": measured,
        "target": target,
        "unit": unit,
        "compare": compare,
        "met": met,
        "detail": detail,
    }


def _section(results: dict[str, Any], key: str) -> tuple[dict[str, Any] | None, str]:
    """The section when it measured, else None and why not."""
    section = results.get(key)
    if section is None:
        return None, f"{key} not run"
    if "error" in section:
        return None, f"{key} failed: {section['error']}"
    return section, ""


def _get(section: dict[str, Any] | None, *path: str) -> Any:
    value: Any = section
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def propagation_entries(results: dict[str, Any]) -> list[Entry]:
    section, why = _section(results, "propagation")
    total = _get(section, "call_to_first_connection_ms")
    failures = _get(section, "failures") or 0
    detail = why or (f"{failures} adds never connected" if failures else "")
    out = []
    for key, limit in (("p50", 30.0), ("p99", 80.0)):
        measured = _get(total, key)
        made = entry(f"add call -> first connection {key}", measured, limit, "ms", "<=", detail)
        made["met"] = made["met"] and not failures  # a lost add misses the target too
        out.append(made)
    return out


def add_scaling_entries(results: dict[str, Any]) -> list[Entry]:
    section, why = _section(results, "add_scaling")
    small, large = _get(section, "loads") or (10, 1000)
    p50 = _get(section, "add_p50_ms") or {}
    detail = why or (
        f"add call p50 {p50.get(str(large), 0):.1f} ms at {large:,}, "
        f"{p50.get(str(small), 0):.1f} ms at {small:,}"
    )
    name = f"add p50 at {large:,} forwards / at {small:,}"
    return [entry(name, _get(section, "ratio_add_p50"), 1.2, "x", "<=", detail)]


def nat_entries(results: dict[str, Any]) -> list[Entry]:
    section, why = _section(results, "nat_latency")
    natd = _get(section, "natd", "working_ms", "p50")
    mini = _get(section, "miniupnpd", "working_ms", "p50")
    detail = why or "a server had no working sample"
    if natd is not None and mini is not None:
        detail = f"working p50: natd {natd:.1f} ms, miniupnpd {mini:.1f} ms"
    measured = _get(section, "ratio_working_p50")
    return [entry("NAT-PMP request -> mapping, natd / miniupnpd", measured, 1.0, "x", "<=", detail)]


def convergence_entries(results: dict[str, Any]) -> list[Entry]:
    section, why = _section(results, "convergence")
    count = _get(section, "forwards") or 10000
    return [
        entry(f"{count:,} forwards converge", _get(section, "converge_s"), 2.0, "s", "<=", why),
        entry(
            f"cold re-apply of {count:,}",
            _get(section, "cold_reapply", "converge_s"),
            2.0,
            "s",
            "<=",
            why,
        ),
    ]


def rest_entries(results: dict[str, Any]) -> list[Entry]:
    """From the later rest window (the steady state; the first still holds the last apply)."""
    section, why = _section(results, "convergence")
    rest = _get(section, "rest") or {}
    window = rest.get("later") or {}
    ours = rest.get("ours")
    if ours is None:  # results from before every process was sampled
        ours = [n for n in window if n == "admind" or n.startswith("agent:")]
    sampled = {n: window[n] for n in ours if n in window}
    if not sampled:
        why = why or "no process sampled at rest"
    woke = {n: p.get("wakeups_per_s", 0.0) for n, p in sampled.items() if p.get("wakeups")}
    by_rate = sorted(woke.items(), key=lambda item: (-item[1], item[0]))  # busiest first
    woke_detail = ", ".join(f"{n} {rate:.1f}/s" for n, rate in by_rate)
    busiest = max(sampled, key=lambda n: sampled[n]["cpu_percent"]) if sampled else None
    edge = f"agent:{rest.get('edge_agent', 'sys-net')}"

    def rss_mb(name: str) -> float | None:
        process = sampled.get(name)
        return None if process is None else process["tree_rss_kib"] / MB

    return [
        entry(
            "processes waking at rest",
            None if why else float(len(woke)),
            0.0,
            "processes",
            "<=",
            why or (f"{woke_detail} (of {len(sampled)})" if woke else f"none of {len(sampled)}"),
        ),
        entry(
            "highest CPU at rest",
            None if busiest is None else sampled[busiest]["cpu_percent"],
            0.5,
            "% of a CPU",
            "<=",
            why or str(busiest),
        ),
        entry("admind RSS at rest", rss_mb("admind"), 100.0, "MB", "<=", why or "with children"),
        entry(
            f"edge agent ({edge}) RSS at rest",
            rss_mb(edge),
            64.0,
            "MB",
            "<=",
            why or "with children",
        ),
    ]


def data_plane_entries(results: dict[str, Any]) -> list[Entry]:
    throughput, why_t = _section(results, "throughput")
    scaling, why_s = _section(results, "scaling")
    largest = max(_get(scaling, "counts") or [10000])
    return [
        entry(
            "throughput forward / routed",
            _get(throughput, "ratio_forward_routed"),
            0.95,
            "x",
            ">=",
            why_t,
        ),
        entry(
            f"connect latency at {largest:,} forwards / at 1",
            _get(scaling, "ratio_latency_largest_vs_1"),
            1.10,
            "x",
            "<=",
            why_s,
        ),
    ]


def entries(results: dict[str, Any]) -> list[Entry]:
    """Every target of issue 17, in its order."""
    return [
        *propagation_entries(results),
        *add_scaling_entries(results),
        *nat_entries(results),
        *convergence_entries(results),
        *rest_entries(results),
        *data_plane_entries(results),
    ]
