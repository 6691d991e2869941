"""The bench's prober handle reads its process's two lines per request, however they arrive."""

import subprocess
import sys

import pytest

from bench.lab_session import Prober
from bench.processes import BenchError

# Stands in for `bench.probe wait`: per request, both lines in one write (they then arrive
# in one read), or the answer only after a pause, or nothing at all.
FAKE = r"""
import json, sys, time
for line in sys.stdin:
    request = json.loads(line)
    started = json.dumps({"started": 1.5})
    answer = json.dumps({"ok": True, "at": 2.5, "attempts": request["port"]})
    if request["host"] == "together":
        sys.stdout.write(started + "\n" + answer + "\n")
    elif request["host"] == "apart":
        sys.stdout.write(started + "\n")
        sys.stdout.flush()
        time.sleep(0.2)
        sys.stdout.write(answer + "\n")
    sys.stdout.flush()
"""


@pytest.fixture
def prober():
    process = subprocess.Popen(
        [sys.executable, "-c", FAKE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield Prober(process)
    finally:
        process.kill()
        process.wait(timeout=10)


def test_both_lines_of_one_read_are_answered(prober: Prober) -> None:
    for port in (1, 2, 3):
        assert prober.begin("together", port, 1.0) == 1.5
        arrival = prober.arrival(1.0)
        assert (arrival.ok, arrival.at, arrival.attempts) == (True, 2.5, port)


def test_an_answer_after_a_pause_is_waited_for(prober: Prober) -> None:
    assert prober.wait_for("apart", 7, 1.0).attempts == 7
    assert prober.wait_for("together", 8, 1.0).attempts == 8


def test_a_silent_prober_is_an_error_within_its_bound(prober: Prober, monkeypatch) -> None:
    monkeypatch.setattr("bench.lab_session.READY_TIMEOUT", 0.2)
    with pytest.raises(BenchError, match="never started"):
        prober.begin("silent", 1, 0.1)
