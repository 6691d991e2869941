"""Qubes' own qvm-firewall, qvm-features and qvm-ls against our service: forwards as features."""

from pathlib import Path

from qubes_portfwd.client.admin_client import AdminClient

FORWARD = (
    "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=192.168.1.0/24"
)


def test_stock_qvm_firewall_lists_a_forwarding_qube(admin_socket: Path, stock_tool) -> None:
    client = AdminClient(admin_socket)
    client.firewall_set("work", ["action=drop dsthost=10.9.9.9", "action=accept"])
    forward_id = client.add_forward("work", FORWARD)

    listed = stock_tool("qvm-firewall", ["work", "list"], admin_socket)

    assert listed.returncode == 0, listed.stderr
    assert "10.9.9.9" in listed.stdout and "forward" not in listed.stdout
    features = stock_tool("qvm-features", ["work"], admin_socket)
    assert features.returncode == 0, features.stderr
    assert f"portfwd.{forward_id}" in features.stdout


def test_stock_qvm_firewall_edit_keeps_the_forward(admin_socket: Path, stock_tool) -> None:
    client = AdminClient(admin_socket)
    forward_id = client.add_forward("work", FORWARD)

    added = stock_tool("qvm-firewall", ["work", "add", "drop", "dsthost=10.8.8.8"], admin_socket)

    assert added.returncode == 0, added.stderr
    assert [s.id for s in client.forwards_of("work")] == [forward_id]
    assert any("10.8.8.8" in line for line in client.firewall_get("work"))


def test_forward_set_through_stock_qvm_features_is_a_forward(
    admin_socket: Path, stock_tool
) -> None:
    client = AdminClient(admin_socket)
    forward_id = client.add_forward("work", FORWARD)
    value = client.get_feature("work", f"portfwd.{forward_id}")
    client.remove_forward("work", forward_id)

    stored = stock_tool("qvm-features", ["work", f"portfwd.{forward_id}", value], admin_socket)

    assert stored.returncode == 0, stored.stderr
    assert [s.id for s in client.forwards_of("work")] == [forward_id]


def test_bad_forward_through_stock_qvm_features_is_refused(admin_socket: Path, stock_tool) -> None:
    refused = stock_tool(
        "qvm-features", ["work", "portfwd.000000000000", "action=forward srcports=80"], admin_socket
    )

    assert refused.returncode != 0
    assert "portfwd" in refused.stderr or "forward" in refused.stderr
    names = AdminClient(admin_socket).list_features("work")
    assert not [name for name in names if name.startswith("portfwd.")]
