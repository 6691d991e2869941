"""Coverage-guided fuzzing of one target with atheris (libFuzzer), for a bounded time.

    python -m tests.fuzz.run TARGET|all [--seconds N] [--corpus DIR] [-- LIBFUZZER_ARGS…]

Exits 0 when the time runs out without a finding; otherwise libFuzzer's non-zero status,
with the crashing input written to `crash-*` in the working directory (or --artifacts).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import atheris

from .limits import PER_INPUT_SECONDS, time_limit

with atheris.instrument_imports(include=["qubes_portfwd"]):
    from . import seeds, targets

MAX_INPUT_BYTES = 4096
# Every target in one process: the input's first byte picks the target (one start-up, and
# coverage guidance shared), for the short run of the normal suite.
ALL = "all"
_NAMES = sorted(targets.TARGETS)


def all_targets(data: bytes) -> None:
    if data:
        targets.TARGETS[_NAMES[data[0] % len(_NAMES)]](data[1:])


def seeds_of(target: str) -> list[bytes]:
    if target != ALL:
        return seeds.SEEDS[target]
    return [bytes((n,)) + seed for n, name in enumerate(_NAMES) for seed in seeds.SEEDS[name]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("target", choices=sorted([*targets.TARGETS, ALL]))
    parser.add_argument("--seconds", type=int, default=60, help="total run time (default 60)")
    parser.add_argument("--corpus", type=Path, help="keep the corpus here (default: a temp dir)")
    parser.add_argument("--artifacts", type=Path, help="where crash-* inputs go")
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer options, after --")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    target = all_targets if args.target == ALL else targets.TARGETS[args.target]

    def one_input(data: bytes) -> None:
        with time_limit(PER_INPUT_SECONDS):
            target(data)

    with tempfile.TemporaryDirectory(prefix="qpt-fuzz-") as scratch:
        corpus = args.corpus or Path(scratch)
        corpus.mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(seeds_of(args.target)):
            (corpus / f"seed-{number}").write_bytes(seed)
        libfuzzer = [
            sys.argv[0],
            str(corpus),
            f"-max_total_time={args.seconds}",
            f"-timeout={int(PER_INPUT_SECONDS) + 3}",
            f"-max_len={MAX_INPUT_BYTES}",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]
        if args.artifacts is not None:
            libfuzzer.append(f"-artifact_prefix={args.artifacts}/")
        atheris.Setup(libfuzzer + args.libfuzzer, one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
