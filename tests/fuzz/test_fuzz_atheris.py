"""The targets under atheris (coverage-guided, libFuzzer) for a bounded time.

The normal suite runs all targets in one process (the input's first byte picks one) for
CI_ATHERIS_SECONDS; FUZZ_SECONDS=N runs each target in its own process for N seconds.
"""

import subprocess
import sys
import time
from pathlib import Path

from .limits import CI_ATHERIS_SECONDS, long_run_seconds
from .targets import TARGETS

REPO = Path(__file__).resolve().parents[2]
# Process start, instrumentation and libFuzzer's last report, on top of the fuzzing time.
OVERHEAD_SECONDS = 60


def test_no_target_fails_under_coverage_guided_fuzzing(tmp_path: Path) -> None:
    long_run = long_run_seconds()
    seconds = int(long_run or CI_ATHERIS_SECONDS)
    names = sorted(TARGETS) if long_run else ["all"]
    runs = {}
    for name in names:
        artifacts = tmp_path / name
        artifacts.mkdir()
        argv = [
            sys.executable, "-m", "tests.fuzz.run", name,
            "--seconds", str(seconds), "--artifacts", str(artifacts),
        ]  # fmt: skip
        with (tmp_path / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)
        runs[name] = (process, artifacts)
    deadline = time.monotonic() + seconds * len(runs) + OVERHEAD_SECONDS
    failed = {}
    try:
        for name, (process, artifacts) in runs.items():
            returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            if returncode != 0:
                log_text = (tmp_path / f"{name}.log").read_text(errors="replace")
                failed[name] = (returncode, sorted(p.name for p in artifacts.iterdir()), log_text)
    finally:
        for process, _ in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert not failed, "\n\n".join(
        f"{name}: exit {code}, inputs {inputs}\n{log[-3000:]}"
        for name, (code, inputs, log) in failed.items()
    )
