"""Real core-admin hosting our extension beside real QubesDB: one per module."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from qubes_lab.core_admin import StockQubesd

HOST = [
    {"name": "sys-net", "provides_network": True},
    {"name": "sys-firewall", "provides_network": True, "netvm": "sys-net"},
    {"name": "work", "netvm": "sys-firewall"},
    {"name": "personal", "netvm": "sys-firewall"},
]


@pytest.fixture(scope="module")
def stock_qubesd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockQubesd]:
    """Never skipped: the pinned sources are part of the suite (CI always has them)."""
    workdir: Path = tmp_path_factory.mktemp("stock")
    running = StockQubesd.start(workdir, HOST, env={"QUBES_PORTFWD_AGENT_TIMEOUT": "1"})
    try:
        yield running
    finally:
        running.stop()
