"""Qubes' own qvm-features sets a qube's NAT policy (the feature `portfwd-nat-policy`)."""

from pathlib import Path

import pytest

from qubes_portfwd.client import QubesdError
from qubes_portfwd.client.admin_client import AdminClient

POLICY = "portfwd-nat-policy"


def _ask(external: int) -> str:
    return (
        f"client=10.137.0.6 proto=tcp internal-port=8080 external-port={external} "
        "lifetime=600 origin=NAT-PMP wait=0"
    )


def test_policy_set_through_stock_qvm_features_takes_effect(admin_socket: Path, stock_tool) -> None:
    value = "ports=18080 action=deny; ports=1024-65535 action=allow max-lifetime=120"

    stored = stock_tool("qvm-features", ["work", POLICY, value], admin_socket)

    assert stored.returncode == 0, stored.stderr
    client = AdminClient(admin_socket)
    assert client.nat_policy_get("work") == value.split("; ")
    with pytest.raises(QubesdError, match="denied by policy"):
        client.nat_request("sys-firewall", _ask(18080))
    granted = client.nat_request("sys-firewall", _ask(18081))
    assert (granted["result"], granted["lifetime"]) == ("granted", "120")


def test_bad_policy_through_stock_qvm_features_is_refused(admin_socket: Path, stock_tool) -> None:
    client = AdminClient(admin_socket)
    client.nat_policy_set("work", ["ports=1-65535 action=deny"])

    refused = stock_tool("qvm-features", ["work", POLICY, "ports=80 action=always"], admin_socket)

    assert refused.returncode != 0
    assert "action: expected deny, allow or ask" in refused.stderr
    assert client.nat_policy_get("work") == ["ports=1-65535 action=deny"]


def test_qvm_portfwd_nat_policy_is_the_feature_stock_tools_show(
    admin_socket: Path, stock_tool, capsys: pytest.CaptureFixture[str]
) -> None:
    from qubes_portfwd.cli import qvm_portfwd

    argv = ["nat-policy", "work", "--set", "ports=80 action=deny", "--set", "ports=81 action=ask"]
    assert qvm_portfwd.main(argv) == 0
    assert capsys.readouterr().out == "ports=80 action=deny\nports=81 action=ask\n"

    shown = stock_tool("qvm-features", ["work", POLICY], admin_socket)

    assert shown.stdout.strip() == "ports=80 action=deny; ports=81 action=ask"
    assert qvm_portfwd.main(["nat-policy", "work", "--set", "ports=80 action=never"]) == 1
    assert "action: expected deny, allow or ask" in capsys.readouterr().err
    assert qvm_portfwd.main(["nat-policy", "work", "--set", ""]) == 0
    assert POLICY not in AdminClient(admin_socket).list_features("work")
