"""Fixtures: a real admin service on a temp socket (no root)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from .service_helpers import RunningService, make_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    running = make_service(tmp_path, agent_timeout=0.05)
    running.start()
    try:
        yield running
    finally:
        running.stop()
