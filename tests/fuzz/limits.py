"""Bounds every fuzzed input shares: a per-input time limit and the run lengths."""

import contextlib
import os
import signal
from collections.abc import Iterator

# Normal inputs take well under a millisecond; a parser still busy after this has a hang.
PER_INPUT_SECONDS = 2.0
# The longer run: `FUZZ_SECONDS=600 pytest tests/fuzz` or `python -m tests.fuzz.run`.
FUZZ_SECONDS_ENV = "FUZZ_SECONDS"
CI_ATHERIS_SECONDS = 6
CI_EXAMPLES = 150


class InputHung(AssertionError):
    """One input took longer than PER_INPUT_SECONDS: a hang, not a slow machine."""


def long_run_seconds() -> float | None:
    """The seconds asked for in FUZZ_SECONDS, or None for the short run of the normal suite."""
    untrusted_value = os.environ.get(FUZZ_SECONDS_ENV, "")
    return float(untrusted_value) if untrusted_value else None


def examples(ci_examples: int = CI_EXAMPLES) -> int:
    """How many hypothesis examples a property gets: few in CI, many in the long run."""
    return ci_examples if long_run_seconds() is None else ci_examples * 100


@contextlib.contextmanager
def time_limit(seconds: float = PER_INPUT_SECONDS) -> Iterator[None]:
    """Raise InputHung in the main thread once `seconds` have passed (SIGALRM timer)."""

    def expired(signum: int, frame: object) -> None:
        raise InputHung(f"one input ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
