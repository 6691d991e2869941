"""Real core-admin with our extension publishes a forward into each hop's real QubesDB; our
agent in each qube (its mount and network namespace) applies it with nft and reports back."""

import time

import pytest
from stock_host import StockHost

from qubes_portfwd.client.admin_client import AdminClient
from qubes_portfwd.client.status_reader import read_status
from qubes_portfwd.model.forward_status import HopState

pytestmark = pytest.mark.lab

FORWARD = (
    "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=192.168.1.0/24"
)
WAIT = 60.0


def _client(host: StockHost) -> AdminClient:
    return AdminClient(host.qubesd.socket_path, status_path=host.qubesd.status_file)


def _entries(host: StockHost, qube: str) -> dict[str, str]:
    done = host.qubesd.qube(qube).run(["qubesdb-multiread", "/qubes-portfwd"])
    assert done.returncode == 0, done.stderr
    found = {}
    for line in done.stdout.splitlines():
        path, _, value = line.partition(" = ")
        found["/qubes-portfwd" + path] = value
    return found


def _hops(host: StockHost, forward_id: str) -> dict[str, str]:
    try:
        document = read_status(host.qubesd.status_file)
    except Exception:
        return {}
    return {
        hop.qube: hop.state.value
        for forward in document.forwards
        if forward.id == forward_id
        for hop in forward.hops
    }


def wait_hops(host: StockHost, forward_id: str, wanted: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + WAIT
    while (hops := _hops(host, forward_id)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return hops


def test_a_forward_set_through_the_admin_api_is_applied_on_every_hop(stock_host: StockHost) -> None:
    forward_id = _client(stock_host).add_forward("work", FORWARD)

    applied = HopState.APPLIED.value
    hops = wait_hops(
        stock_host, forward_id, {"sys-net": applied, "sys-firewall": applied, "work": applied}
    )

    assert hops == {"sys-net": applied, "sys-firewall": applied, "work": applied}
    for qube, role in (("sys-net", "dnat"), ("sys-firewall", "dnat"), ("work", "accept")):
        entries = _entries(stock_host, qube)
        assert f"role={role}" in entries[f"/qubes-portfwd/{forward_id}/4"]
        assert entries["/qubes-portfwd-handled"] == entries["/qubes-portfwd"]
