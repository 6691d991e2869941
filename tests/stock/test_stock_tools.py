"""Qubes' own qvm-features, qvm-prefs, qvm-firewall and qvm-ls against real core-admin hosting
our extension: a forward set by stock qvm-features and one by our qvm-portfwd are the same
forward, applied the same on every hop; the stock tools keep working on a forwarding qube."""

import os
import subprocess
import sys

import pytest
from stock_host import StockHost

pytestmark = pytest.mark.lab

PATH = ("sys-net", "sys-firewall", "work")
APPLIED = dict.fromkeys(PATH, "applied")


def qvm_portfwd(host: StockHost, *args: str) -> subprocess.CompletedProcess[str]:
    """Our own client, pointed at the same socket and the extension's status document."""
    env = {
        **os.environ,
        "QUBESD_SOCKET": str(host.qubesd.socket_path),
        "QUBES_PORTFWD_STATUS": str(host.qubesd.status_file),
    }
    return subprocess.run(
        [sys.executable, "-m", "qubes_portfwd.cli.qvm_portfwd", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stock(host: StockHost, stock_tool, tool: str, *args: str) -> str:
    done = stock_tool(tool, list(args), host.qubesd.socket_path)
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


def hop_entries(host: StockHost, forward_id: str) -> dict[str, str]:
    key = f"/qubes-portfwd/{forward_id}/4"
    return {qube: host.entries(qube).get(key, "") for qube in PATH}


def test_qvm_features_and_qvm_portfwd_make_the_same_forward(
    stock_host: StockHost, stock_tool
) -> None:
    added = qvm_portfwd(
        stock_host, "add", "work", "tcp", "80:8080", "--external", "--from", "192.168.1.0/24"
    )
    assert added.returncode == 0, added.stderr
    forward_id = added.stdout.split()[-1]
    feature = f"portfwd.{forward_id}"
    assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    by_ours = hop_entries(stock_host, forward_id)
    value = stock(stock_host, stock_tool, "qvm-features", "work", feature).strip()

    removed = qvm_portfwd(stock_host, "del", forward_id)
    assert removed.returncode == 0, removed.stderr
    assert stock_host.wait_until(lambda: set(hop_entries(stock_host, forward_id).values()), {""})
    stock(stock_host, stock_tool, "qvm-features", "work", feature, value)

    assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    assert hop_entries(stock_host, forward_id) == by_ours
    listed = qvm_portfwd(stock_host, "list")
    assert listed.returncode == 0 and forward_id in listed.stdout, listed.stderr
    stock(stock_host, stock_tool, "qvm-features", "--unset", "work", feature)
    assert stock_host.wait_until(lambda: set(hop_entries(stock_host, forward_id).values()), {""})


def test_stock_tools_work_on_a_forwarding_qube(stock_host: StockHost, stock_tool) -> None:
    added = qvm_portfwd(stock_host, "add", "work", "tcp", "25", "--external", "--from", "any")
    assert added.returncode == 0, added.stderr
    forward_id = added.stdout.split()[-1]
    try:
        stock(stock_host, stock_tool, "qvm-firewall", "work", "add", "drop", "dsthost=10.9.9.9")
        rules = stock(stock_host, stock_tool, "qvm-firewall", "work", "list")
        assert "10.9.9.9" in rules and "forward" not in rules
        assert f"portfwd.{forward_id}" in stock(stock_host, stock_tool, "qvm-features", "work")
        assert stock(stock_host, stock_tool, "qvm-prefs", "work", "netvm").strip() == (
            "sys-firewall"
        )
        assert "work" in stock(stock_host, stock_tool, "qvm-ls", "--raw-list")
        assert stock_host.wait_hops(forward_id, APPLIED) == APPLIED
    finally:
        qvm_portfwd(stock_host, "del", forward_id)
        stock(stock_host, stock_tool, "qvm-firewall", "work", "reset")
