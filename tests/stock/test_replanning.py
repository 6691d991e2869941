"""Real core-admin's own events re-plan as the lab's qubesd does: a netvm change (stock
qvm-prefs), an address change, and a qube's restart (domain-shutdown, then a fresh QubesDB and
domain-qdb-create), each seen in every hop's real QubesDB and our agents' reports."""

import pytest
from stock_host import StockHost

from qubes_lab import netns
from qubes_portfwd.client.status_reader import read_status

pytestmark = pytest.mark.lab

FORWARD = (
    "action=forward forwardtype=external proto=tcp srcports=443 dstports=8443"
    " srchost=192.168.1.0/24"
)
PATH = ("sys-net", "sys-firewall", "work")
APPLIED = dict.fromkeys(PATH, "applied")
NEW_IP = "10.137.0.77"


def held_by(host: StockHost, key: str) -> list[str]:
    return [qube for qube in PATH if key in host.entries(qube)]


def firewall_entry(host: StockHost, key: str) -> str:
    return host.entries("sys-firewall").get(key, "")


def forward_state(host: StockHost, forward_id: str) -> tuple[str, str]:
    for forward in read_status(host.qubesd.status_file).forwards:
        if forward.id == forward_id:
            return forward.state.value, forward.reason or ""
    return "", ""


def prefs(host: StockHost, stock_tool, *args: str) -> None:
    done = stock_tool("qvm-prefs", list(args), host.qubesd.socket_path)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def forward(stock_host: StockHost):
    forward_id = stock_host.client().add_forward("work", FORWARD)
    assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    yield forward_id, f"/qubes-portfwd/{forward_id}/4"
    stock_host.client().remove_forward("work", forward_id)


def test_a_netvm_change_makes_a_pinned_forward_inactive_and_back(
    stock_host: StockHost, stock_tool, forward: tuple[str, str]
) -> None:
    forward_id, key = forward

    prefs(stock_host, stock_tool, "work", "netvm", "sys-net")

    assert stock_host.wait_until(lambda: held_by(stock_host, key), []) == []
    state, reason = forward_state(stock_host, forward_id)
    assert state == "inactive" and "netvm path changed" in reason

    prefs(stock_host, stock_tool, "work", "netvm", "sys-firewall")

    assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    assert held_by(stock_host, key) == list(PATH)


def test_an_address_change_moves_the_forward_to_the_new_address(
    stock_host: StockHost, stock_tool, forward: tuple[str, str]
) -> None:
    forward_id, key = forward
    old_ip = stock_host.qubesd.command("state")["state"]["work"]["ip"]
    # What Qubes' vif-route does for the new address (the lab's re-attach stand-in).
    work_vif = f"vif{stock_host.qubesd.command('state')['state']['work']['qid']}.0"
    netns.ip_batch(stock_host.names["sys-firewall"], [f"route add {NEW_IP}/32 dev {work_vif}"])
    try:
        prefs(stock_host, stock_tool, "work", "ip", NEW_IP)

        moved = stock_host.wait_until(
            lambda: f"to={NEW_IP}" in firewall_entry(stock_host, key), True
        )
        assert moved, stock_host.entries("sys-firewall")
        assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
        assert old_ip not in stock_host.entries("sys-firewall")[key]
    finally:
        prefs(stock_host, stock_tool, "--default", "work", "ip")
        netns.ip_batch(stock_host.names["sys-firewall"], [f"route del {NEW_IP}/32"])
    assert stock_host.wait_until(
        lambda: f"to={old_ip}" in stock_host.entries("sys-firewall").get(key, ""), True
    )


def test_a_restarted_qube_gets_its_entries_again(
    stock_host: StockHost, forward: tuple[str, str]
) -> None:
    forward_id, key = forward
    stock_host.stop_agent("work")
    stock_host.qubesd.command("stop", qube="work")  # domain-shutdown

    # Nothing outside a stopped target stays open (its own DB is gone with it, below).
    assert stock_host.wait_until(lambda: held_by(stock_host, key), ["work"]) == ["work"]

    stock_host.qubesd.restart_qubesdb("work")  # the qube boots: a fresh, empty QubesDB
    assert key not in stock_host.entries("work")
    stock_host.start_agent("work")
    stock_host.qubesd.command("start", qube="work")  # core-admin's domain-qdb-create

    assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    assert held_by(stock_host, key) == list(PATH)


def test_a_restarted_qubesd_loads_the_forward_and_keeps_every_hop(
    stock_host: StockHost, forward: tuple[str, str]
) -> None:
    forward_id, key = forward
    stock_host.qubesd.status_file.unlink()

    stock_host.qubesd.restart_qubesd()  # qubes.xml loaded again: domain-load per qube

    assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    assert held_by(stock_host, key) == list(PATH)
    # The new extension owns the entries: a removal through it leaves every hop.
    stock_host.client().remove_forward("work", forward_id)
    assert stock_host.wait_until(lambda: held_by(stock_host, key), []) == []
    stock_host.client().add_forward("work", FORWARD)  # for the fixture's own removal
