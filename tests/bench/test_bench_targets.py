"""Issue 17's targets from a results document: each met, each missed, failures null/false."""

from typing import Any

import pytest

from bench.report import add_scaling_lines, format_report, rest_lines, targets_lines
from bench.targets import MB, entries, entry

NAMES = [
    "add call -> first connection p50",
    "add call -> first connection p99",
    "add p50 at 1,000 forwards / at 10",
    "NAT-PMP request -> mapping, natd / miniupnpd",
    "10,000 forwards converge",
    "cold re-apply of 10,000",
    "processes waking at rest",
    "highest CPU at rest",
    "admind RSS at rest",
    "edge agent (agent:sys-net) RSS at rest",
    "throughput forward / routed",
    "connect latency at 10,000 forwards / at 1",
]


def _process(cpu: float, rss_mb: float, wakeups: int = 0) -> dict[str, Any]:
    kib = rss_mb * MB
    return {
        "cpu_percent": cpu,
        "rss_kib": kib,
        "tree_rss_kib": kib,
        "peak_rss_kib": kib,
        "wakeups": wakeups,
        "wakeups_per_s": wakeups / 10.0,
    }


def results(met: bool) -> dict[str, Any]:
    """A run whose every number is just inside (met) or just outside (not) its target."""
    k = 1.0 if met else 1.5
    later = {
        "admind": _process(0.1, 90.0 * k),
        "agent:sys-net": _process(0.4 * k, 60.0 * k, 0 if met else 20),
        "agent:work": _process(0.0, 30.0),
        "natd:sys-firewall": _process(0.0, 20.0),
        "qubes-firewall:sys-net": _process(3.0, 40.0, 500),  # the lab's, not counted
    }
    return {
        "propagation": {
            "call_to_first_connection_ms": {"p50": 25.0 * k, "p99": 70.0 * k},
            "failures": 0,
        },
        "add_scaling": {
            "loads": [10, 1000],
            "add_p50_ms": {"10": 20.0, "1000": 23.0 * k},
            "ratio_add_p50": 1.15 * k,
        },
        "nat_latency": {
            "natd": {"working_ms": {"p50": 20.0 * k}},
            "miniupnpd": {"working_ms": {"p50": 21.0}},
            "ratio_working_p50": 20.0 * k / 21.0,
        },
        "convergence": {
            "forwards": 10000,
            "converge_s": 1.9 * k,
            "cold_reapply": {"converge_s": 1.8 * k},
            "rest": {
                "edge_agent": "sys-net",
                "ours": ["admind", "agent:sys-net", "agent:work", "natd:sys-firewall"],
                "processes": {},
                "later": later,
            },
        },
        "throughput": {"ratio_forward_routed": 0.99 if met else 0.9},
        "scaling": {"counts": [1, 100, 10000], "ratio_latency_largest_vs_1": 1.05 * k},
    }


def test_every_target_has_one_entry_in_the_issues_order() -> None:
    made = entries(results(met=True))
    assert [e["name"] for e in made] == NAMES
    for e in made:
        assert {"name", "measured", "target", "unit", "met"} <= set(e)


def test_every_target_met() -> None:
    made = entries(results(met=True))
    assert [e["name"] for e in made if not e["met"]] == []
    by_name = {e["name"]: e for e in made}
    assert by_name["processes waking at rest"]["measured"] == 0
    assert by_name["processes waking at rest"]["detail"] == "none of 4"
    assert by_name["highest CPU at rest"]["detail"] == "agent:sys-net"
    assert by_name["admind RSS at rest"]["measured"] == pytest.approx(90.0)


def test_every_target_missed() -> None:
    made = entries(results(met=False))
    assert [e["name"] for e in made if e["met"]] == []
    woke = next(e for e in made if e["name"] == "processes waking at rest")
    assert woke["measured"] == 1  # the lab's busy worker is shown, not counted
    assert woke["detail"] == "agent:sys-net 2.0/s (of 4)"


def test_the_target_is_from_the_call_and_a_lost_add_misses_it() -> None:
    doc = results(met=True)
    doc["propagation"]["failures"] = 1
    made = entries(doc)
    assert not made[0]["met"] and not made[1]["met"]
    assert made[0]["measured"] == 25.0
    assert made[0]["detail"] == "1 adds never connected"


@pytest.mark.parametrize(
    "key",
    ["propagation", "add_scaling", "nat_latency", "convergence", "throughput", "scaling"],
)
def test_a_failed_measurement_gives_null_and_missed(key: str) -> None:
    doc = results(met=True)
    doc[key] = {"error": "BenchError: lab did not come up"}
    made = entries(doc)
    failed = [e for e in made if e["measured"] is None]
    assert failed and all(not e["met"] for e in failed)
    assert all("failed: BenchError" in e["detail"] for e in failed)
    assert all(e["met"] for e in made if e["measured"] is not None)


def test_a_measurement_not_run_still_lists_its_targets() -> None:
    made = entries({"mode": "quick"})
    assert len(made) == len(NAMES)
    assert all(e["measured"] is None and not e["met"] for e in made)


def test_an_entry_compares_either_way() -> None:
    assert entry("a", 0.95, 0.95, "x", ">=")["met"]
    assert not entry("a", 0.94, 0.95, "x", ">=")["met"]
    assert entry("a", 2.0, 2.0, "s", "<=")["met"]
    with pytest.raises(ValueError):
        entry("a", 1.0, 1.0, "s", "<")


def test_the_table_shows_every_entry_and_its_verdict() -> None:
    lines = targets_lines(entries(results(met=False)))
    assert lines[0] == "Targets (issue 17): 0 of 12 met"
    rows = lines[3:]
    assert len(rows) == len(NAMES)
    first = rows[0].split()
    assert first[-5:] == ["37.5", "<=", "30", "ms", "MISSED"]
    assert all("MISSED" in row for row in rows)
    assert "connect latency at 10,000 forwards / at 1" in rows[-1]
    assert rows[-1].split()[-5:] == ["1.575", "<=", "1.1", "x", "MISSED"]


def test_the_report_ends_with_the_targets_table() -> None:
    doc = {
        "mode": "quick",
        "machine": {
            "cpu_model": "CPU",
            "cores": 2,
            "kernel": "6.18",
            "nft": "nftables v1.0.6",
            "date": "2026-12-07T10:00:00+00:00",
            "load_average_at_start": [0.5, 0.5, 0.5],
        },
        "propagation": {"error": "BenchError: lab did not come up"},
    }
    doc["targets"] = entries(doc)
    text = format_report(doc)
    tail = text.splitlines()[-(len(NAMES) + 3) :]
    assert tail[0] == "Targets (issue 17): 0 of 12 met"
    assert "propagation failed: BenchError: lab did not come up" in tail[3]
    assert tail[3].split()[6:10] == ["-", "<=", "30", "ms"]


def test_rest_rows_show_wakeups_and_mark_the_labs_processes() -> None:
    section = results(met=False)["convergence"]
    section["rest"].update(window_s=10.0, later_start_s=30.0)
    section["rest"]["processes"] = section["rest"]["later"]
    lines = rest_lines(section)
    assert "wakeups/s" in lines[1]
    edge = next(line for line in lines if line.strip().startswith("agent:sys-net"))
    assert edge.split()[-1] == "2.0"
    assert any("qubes-firewall:sys-net (lab)" in line for line in lines)
    assert "(the verdict)" in lines[2 + len(section["rest"]["later"]) + 1]
    assert "the same over 10 s, 30 s after" in lines[2 + len(section["rest"]["later"]) + 1]


def test_add_scaling_rows_and_verdict() -> None:
    phase = {
        "adds": 10,
        "call_ms": {"p50": 20.0, "p99": 30.0},
        "call_to_first_connection_ms": {"p50": 25.0, "p99": 40.0},
        "failures": 0,
        "load_s": 0.5,
        "load_applied_s": 0.1,
    }
    section = {
        "loads": [10, 1000],
        "target_qube": "work",
        "phases": {"10": phase, "1000": {**phase, "call_ms": {"p50": 30.0, "p99": 50.0}}},
        "ratio_add_p50": 1.5,
        "target_ratio": 1.2,
        "met": False,
    }
    lines = add_scaling_lines(section)
    assert lines[0].startswith("Add latency against the forwards on the host (10 adds on work")
    assert lines[-2].split()[:2] == ["1,000", "30.0"]
    assert lines[-1] == "  add call p50 at 1,000 / at 10 = 1.500; target <= x1.2: MISSED"
