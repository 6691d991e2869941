"""The printed table: columns line up, verdicts and failures are visible."""

from bench.report import format_report, num, render
from bench.settings import FULL, QUICK


def test_render_pads_columns() -> None:
    lines = render(["path", "Gbit/s"], [["routed", "23.10"], ["relay", "1.40"]])
    assert lines[0] == "  path    Gbit/s"
    assert lines[2] == "  routed   23.10"
    assert lines[3] == "  relay     1.40"
    assert len({len(line) for line in lines}) == 1


def test_num_marks_missing_values() -> None:
    assert num(None) == "-"
    assert num(12345.678, 0) == "12,346"


def _results() -> dict:
    return {
        "mode": "quick",
        "machine": {
            "cpu_model": "CPU",
            "cores": 2,
            "kernel": "6.18",
            "nft": "nftables v1.0.6",
            "date": "2026-11-22T10:00:00+00:00",
            "load_average_at_start": [0.5, 0.5, 0.5],
        },
        "throughput": {
            "gbits": {"routed": [20.0, 22.0], "forward": [21.0, 21.5], "relay": [1.0, 1.2]},
            "gbits_median": {"routed": 21.0, "forward": 21.25, "relay": 1.1},
            "first_byte_us": {"routed": {"p50": 80.0}},
            "ratio_forward_routed": 21.25 / 21.0,
            "target_ratio": 0.95,
            "met": True,
        },
        "propagation": {"error": "BenchError: lab did not come up"},
    }


def test_report_shows_verdicts_and_failures() -> None:
    text = format_report(_results())
    assert "forward / routed = 1.012; target >= 0.95: met" in text
    assert "propagation: FAILED: BenchError: lab did not come up" in text
    assert "Rule-count scaling" not in text  # not measured: no section


def test_quick_measures_less_than_full() -> None:
    assert QUICK.repeats < FULL.repeats
    assert max(QUICK.forward_counts) < max(FULL.forward_counts) == 10_000
    assert FULL.repeats >= 3
