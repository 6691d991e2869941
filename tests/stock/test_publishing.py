"""Real core-admin with our extension publishes a forward into each hop's real QubesDB; our
agent in each qube (its mount and network namespace) applies it with nft and reports back."""

import time

import pytest
from stock_host import StockHost

pytestmark = pytest.mark.lab

FORWARD = (
    "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=192.168.1.0/24"
)
APPLIED = {"sys-net": "applied", "sys-firewall": "applied", "work": "applied"}
ROLES = (("sys-net", "dnat"), ("sys-firewall", "dnat"), ("work", "accept"))


def test_outer_hops_wait_until_the_inner_hop_is_applied(stock_host: StockHost) -> None:
    stock_host.stop_agent("work")
    forward_id = stock_host.client().add_forward("work", FORWARD)
    key = f"/qubes-portfwd/{forward_id}/4"

    # The target's QubesDB got it (committed); no outer hop is opened before it is applied.
    assert stock_host.wait_until(lambda: key in stock_host.entries("work"), True)
    pending = stock_host.wait_hops(
        forward_id, {"sys-net": "pending", "sys-firewall": "pending", "work": "pending"}
    )
    assert pending == {"sys-net": "pending", "sys-firewall": "pending", "work": "pending"}
    assert key not in stock_host.entries("sys-firewall")
    assert key not in stock_host.entries("sys-net")

    stock_host.start_agent("work")

    assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    for qube, role in ROLES:
        entries = stock_host.entries(qube)
        assert f"role={role}" in entries[key]
        assert entries["/qubes-portfwd-handled"] == entries["/qubes-portfwd"]
    stock_host.client().remove_forward("work", forward_id)
    for qube, _ in ROLES:
        assert stock_host.wait_until(lambda q=qube: key in stock_host.entries(q), False) is False


def test_an_expiring_forward_leaves_every_hop_and_its_feature_goes(stock_host: StockHost) -> None:
    expire = int(time.time()) + 3
    forward_id = stock_host.client().add_forward("work", f"{FORWARD} expire={expire}")
    key = f"/qubes-portfwd/{forward_id}/4"
    feature = f"portfwd.{forward_id}"

    # Expiry runs on core-admin's loop (the controller's reconciler), which then removes the
    # feature through core-admin itself: the stock tools no longer see it.
    def gone() -> bool:
        features = stock_host.qubesd.command("state")["state"]["work"]["features"]
        return feature not in features and not any(
            key in stock_host.entries(qube) for qube, _ in ROLES
        )

    assert stock_host.wait_until(gone, True)
    assert time.time() >= expire
