"""`python -m bench.run [--quick] [--only NAME,...]`: the measurements of issues #6 and #17.

Prints a table ending with issue 17's targets (also `results["targets"]`), writes
`results.json`, `results.txt` and two PNG plots under bench/results/
(`--quick`: bench/results/quick/, not committed). Needs root: it makes network namespaces
(`qpt-bench-<pid>-*`) and a lab (`bn<pid>`), and deletes them again, also on failure.
"""

import argparse
import json
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from qubes_lab.topology_file import load_lab_spec

from . import (
    add_scaling,
    breakdown,
    convergence,
    machine,
    nat_latency,
    propagation,
    scaling,
    targets,
    throughput,
)
from .chain import Chain, run
from .lab_session import TOPOLOGY, LabSession
from .report import format_report
from .settings import FULL, QUICK, Settings

RESULTS = Path(__file__).resolve().parent / "results"
MEASUREMENTS = (
    "throughput",
    "scaling",
    "propagation",
    "nat_latency",
    "add_scaling",
    "convergence",
    "breakdown",
)
EDGE = "sys-net"
LAB_MEASUREMENTS: dict[str, Any] = {
    "propagation": propagation,
    "nat_latency": nat_latency,
    "convergence": convergence,
    "add_scaling": add_scaling,
}


def _guarded(results: dict[str, Any], key: str, work: Callable[[], dict[str, Any]]) -> None:
    """A failed measurement is reported in its place; the others still run."""
    print(f"-- {key} ...", file=sys.stderr, flush=True)
    try:
        results[key] = work()
    except Exception as err:
        traceback.print_exc()
        results[key] = {"error": f"{type(err).__name__}: {err}"}


def run_chain(results: dict[str, Any], settings: Settings, wanted: set[str]) -> None:
    chain = Chain()
    try:
        chain.up()
        chain.start_latency_server()
        chain.start_iperf_server()
        chain.start_relays()
        if "throughput" in wanted:
            _guarded(results, "throughput", lambda: throughput.measure(chain, settings))
        if "scaling" in wanted:
            _guarded(results, "scaling", lambda: scaling.measure(chain, settings))
    finally:
        chain.down()


def run_lab(results: dict[str, Any], settings: Settings, wanted: set[str]) -> None:
    shared = [k for k in ("propagation", "nat_latency", "convergence") if k in wanted]
    if shared:
        _in_lab(results, settings, shared)
    if "add_scaling" in wanted:
        # A lab of its own, purged after it: convergence must start from no forwards, and
        # removing add_scaling's 1,000 one by one costs as much as storing them.
        _in_lab(results, settings, ["add_scaling"])


def _in_lab(results: dict[str, Any], settings: Settings, keys: list[str]) -> None:
    """The measurements `keys`, in order, in one fresh lab that is deleted after them."""
    session = LabSession()
    try:
        session.up()
        for key in keys:
            module = LAB_MEASUREMENTS[key]
            _guarded(results, key, lambda m=module: m.measure(session, settings))
    finally:
        session.down()


def run_breakdown(results: dict[str, Any], settings: Settings) -> None:
    topology = load_lab_spec(TOPOLOGY).topology
    lines = convergence.spread(settings.convergence_forwards, topology, "192.0.2.0/24")
    scratch = Chain("-scratch").netns("edge")

    def measure() -> dict[str, Any]:
        run(["ip", "netns", "add", scratch])
        try:
            return breakdown.measure(lines, topology, EDGE, scratch)
        finally:
            subprocess.run(["ip", "netns", "delete", scratch], capture_output=True, timeout=30)

    _guarded(results, "breakdown", measure)


def write_outputs(results: dict[str, Any], directory: Path) -> list[Path]:
    from . import plots  # here: matplotlib (the bench extra) only when plots are written

    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "results.json", directory / "results.txt"]
    written[0].write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    written[1].write_text(format_report(results) + "\n")
    if "error" not in results.get("scaling", {"error": ""}):
        written.append(directory / "latency-vs-forwards.png")
        plots.latency_plot(results["scaling"], written[-1])
    if "error" not in results.get("throughput", {"error": ""}):
        written.append(directory / "throughput-per-path.png")
        plots.throughput_plot(results["throughput"], written[-1])
    return written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, fewer forwards")
    parser.add_argument(
        "--only",
        default=",".join(MEASUREMENTS),
        help=f"comma-separated subset of {','.join(MEASUREMENTS)}",
    )
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument(
        "--forwards",
        type=int,
        metavar="N",
        help="forwards of the convergence measurement (default: 10,000; --quick: 1,000)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; expected some of {list(MEASUREMENTS)}")
    if args.forwards is not None and not 1 <= args.forwards <= 10000:
        parser.error("--forwards: expected a count 1-10000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.forwards is not None:
        settings = replace(settings, convergence_forwards=args.forwards)
    wanted = set(args.only.split(","))
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine.describe(datetime.now().astimezone()),
        "settings": settings.to_json(),
    }
    if wanted & {"throughput", "scaling"}:
        run_chain(results, settings, wanted)
    if wanted & {"propagation", "nat_latency", "add_scaling", "convergence"}:
        run_lab(results, settings, wanted)
    if "breakdown" in wanted:
        run_breakdown(results, settings)
    results["targets"] = targets.entries(results)
    written = write_outputs(results, args.out or (RESULTS / "quick" if args.quick else RESULTS))
    print(format_report(results))
    print("written: " + ", ".join(str(p) for p in written))
    failed = [k for k in MEASUREMENTS if "error" in results.get(k, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
