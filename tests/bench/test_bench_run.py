"""bench.run's lab measurements: add_scaling gets a lab of its own, after the shared one."""

from types import SimpleNamespace
from typing import Any

import pytest

from bench import run
from bench.settings import QUICK


def test_add_scaling_runs_in_a_fresh_lab_after_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []

    class FakeSession:
        def up(self) -> None:
            events.append("up")

        def down(self) -> None:
            events.append("down")

    def fake(key: str) -> Any:
        return SimpleNamespace(measure=lambda session, settings: events.append(key) or {})

    monkeypatch.setattr(run, "LabSession", FakeSession)
    monkeypatch.setattr(run, "LAB_MEASUREMENTS", {k: fake(k) for k in run.LAB_MEASUREMENTS})
    results: dict[str, Any] = {}
    run.run_lab(results, QUICK, {"convergence", "add_scaling", "propagation"})
    assert events == ["up", "propagation", "convergence", "down", "up", "add_scaling", "down"]
    assert set(results) == {"propagation", "convergence", "add_scaling"}
