"""Real core-admin hosting our extension beside real QubesDB: one per module."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import stock_network as network
from stock_host import StockHost

from qubes_lab.core_admin import StockQubesd
from qubes_lab.upstream import UpstreamUnavailable

QUBES = {"stock-template", "sys-net", "sys-firewall", "work", "personal"}
HOST = [
    {"name": "sys-net", "provides_network": True},
    {"name": "sys-firewall", "provides_network": True, "netvm": "sys-net"},
    {"name": "work", "netvm": "sys-firewall"},
    {"name": "personal", "netvm": "sys-firewall"},
]


@pytest.fixture(scope="module")
def stock_qubesd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockQubesd]:
    """Without the pinned sources (neither beside us nor fetched) reported as not run, with
    the reason; CI always has them and fails on any skip."""
    workdir: Path = tmp_path_factory.mktemp("stock")
    try:
        running = StockQubesd.start(workdir, HOST, env={"QUBES_PORTFWD_AGENT_TIMEOUT": "1"})
    except UpstreamUnavailable as err:
        pytest.skip(f"Qubes' core-admin or QubesDB not available: {err}")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def stock_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockHost]:
    """Namespaces named after this process, removed by name at the end; not run (with the
    reason) without the pinned sources, as `stock_qubesd`."""
    workdir: Path = tmp_path_factory.mktemp("stockhost")
    names = network.build(network.lab_tag(), network.topology_of(HOST))
    host = StockHost(workdir, names)
    try:
        try:
            host.started = StockQubesd.start(
                workdir,
                HOST,
                netns=names,
                env={"QUBES_PORTFWD_AGENT_TIMEOUT": "10"},
                before_qubesd=host.start_agents,
            )
        except UpstreamUnavailable as err:
            pytest.skip(f"Qubes' core-admin or QubesDB not available: {err}")
        assert host.wait_until(host.qubes_in_status, QUBES) == QUBES, host.qubesd.log()
        yield host
    finally:
        for qube in list(host.agents):
            host.stop_agent(qube)
        if host.started is not None:
            host.started.stop()
        network.remove(names)
