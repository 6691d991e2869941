"""The CLIs against a real admin service (no agents: every hop stays pending)."""

import json
from pathlib import Path

import pytest

from admin_service import BOOT_ID
from qubes_lab.tools import qvm_firewall, qvm_prefs
from qubes_portfwd.cli import qvm_portfwd
from qubes_portfwd.client import AdminClient

Capture = pytest.CaptureFixture[str]
DEMO_ADD = ["add", "work", "tcp", "80:8080", "--external", "--from", "192.0.2.0/24"]


def run(capsys: Capture, main, *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code, capsys.readouterr()
    captured = capsys.readouterr()
    if code == 0:
        assert captured.err == ""
    return captured.out


def error_of(capsys: Capture, main, prog: str, *argv: str, code: int) -> str:
    assert main(list(argv)) == code
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{prog}: error: ")
    assert captured.err.count("\n") == 1
    return captured.err


def test_portfwd_add_list_del(admin_socket: Path, capsys: Capture) -> None:
    forward = run(capsys, qvm_portfwd.main, *DEMO_ADD).strip()
    assert len(forward) == 12
    client = AdminClient(admin_socket)
    assert f"portfwd.{forward}" in client.list_features("work")
    assert client.get_feature("work", f"portfwd.{forward}") == (
        "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
        "srchost=192.0.2.0/24 via=sys-firewall,sys-net"
    )
    assert client.firewall_get("work") == ["action=accept"]

    table = run(capsys, qvm_portfwd.main, "list").splitlines()
    assert table[0].split()[:3] == ["ID", "TARGET", "TYPE"]
    row = table[1].split()
    assert row[:6] == [forward, "work", "external", "4", "tcp", "80→8080"]
    assert table[2].startswith("    path: LAN → sys-net[")
    assert "→ sys-firewall[" in table[2]
    assert "→ work:8080[" in table[2]

    listed = json.loads(run(capsys, qvm_portfwd.main, "list", "--json"))
    assert [(f["id"], f["target"], f["qube_ports"]) for f in listed] == [(forward, "work", "8080")]
    assert [h["qube"] for h in listed[0]["hops"]] == ["sys-net", "sys-firewall", "work"]

    assert forward in run(capsys, qvm_portfwd.main, "list", "sys-firewall")
    assert forward in run(capsys, qvm_portfwd.main, "list", "--through", "sys-net", "--json")
    assert forward not in run(capsys, qvm_portfwd.main, "list", "personal")

    run(capsys, qvm_portfwd.main, "del", forward[:6])
    assert json.loads(run(capsys, qvm_portfwd.main, "list", "--json")) == []
    assert f"portfwd.{forward}" not in client.list_features("work")


def test_portfwd_refuses_a_duplicate_and_an_unknown_id(admin_socket: Path, capsys: Capture) -> None:
    forward = run(capsys, qvm_portfwd.main, *DEMO_ADD).strip()
    assert forward in error_of(capsys, qvm_portfwd.main, "qvm-portfwd", *DEMO_ADD, code=2)
    assert "no forward" in error_of(
        capsys, qvm_portfwd.main, "qvm-portfwd", "del", "0123456789ab", code=2
    )


def test_portfwd_internal_forward_and_rebind(admin_socket: Path, capsys: Capture) -> None:
    forward = run(
        capsys,
        qvm_portfwd.main,
        "add",
        "work",
        "tcp",
        "22",
        "--internal",
        "--from",
        "personal",
        "--until-reboot",
        "--comment",
        "ssh from personal",
    ).strip()
    client = AdminClient(admin_socket)
    assert client.firewall_get("work") == ["action=accept"]
    line = client.get_feature("work", f"portfwd.{forward}")
    assert "srchost=personal" in line
    assert f"expire=boot:{BOOT_ID}" in line
    listing = run(capsys, qvm_portfwd.main, "list", "work")
    assert "personal → sys-firewall[" in listing
    assert "comment: ssh from personal" in listing
    run(capsys, qvm_portfwd.main, "rebind", forward)


def test_service_errors_are_one_line_exit_1(admin_socket: Path, capsys: Capture) -> None:
    assert "nosuch" in error_of(capsys, qvm_firewall.main, "qvm-firewall", "nosuch", code=1)
    error_of(
        capsys,
        qvm_portfwd.main,
        "qvm-portfwd",
        "add",
        "nosuch",
        "tcp",
        "80",
        "--external",
        "--from",
        "any",
        code=1,
    )


def test_firewall_add_list_raw_del_reset(admin_socket: Path, capsys: Capture) -> None:
    assert run(capsys, qvm_firewall.main, "--raw", "work") == "action=accept\n"
    run(capsys, qvm_firewall.main, "work", "del", "accept")
    run(capsys, qvm_firewall.main, "work", "add", "accept", "10.0.0.0/8", "tcp", "443")
    run(capsys, qvm_firewall.main, "work", "add", "--before", "0", "drop", "specialtarget=dns")
    run(capsys, qvm_firewall.main, "work", "add", "action=accept", "comment=the rest")
    assert run(capsys, qvm_firewall.main, "--raw", "work").splitlines() == [
        "action=drop specialtarget=dns",
        "action=accept dst4=10.0.0.0/8 proto=tcp dstports=443-443",
        "action=accept comment=the rest",
    ]
    table = run(capsys, qvm_firewall.main, "work", "list").splitlines()
    assert table[0].split()[:3] == ["NO", "ACTION", "HOST"]
    assert table[2].split()[:5] == ["1", "accept", "10.0.0.0/8", "tcp", "443"]

    run(capsys, qvm_firewall.main, "work", "del", "accept", "10.0.0.0/8", "tcp", "443")
    run(capsys, qvm_firewall.main, "work", "del", "--rule-no", "0")
    assert (
        run(capsys, qvm_firewall.main, "work", "list", "--raw")
        == "action=accept comment=the rest\n"
    )
    assert "no such rule" in error_of(
        capsys, qvm_firewall.main, "qvm-firewall", "work", "del", "drop", code=2
    )
    assert "--rule-no" in error_of(
        capsys, qvm_firewall.main, "qvm-firewall", "work", "del", "--rule-no", "5", code=2
    )
    run(capsys, qvm_firewall.main, "work", "reset")
    assert run(capsys, qvm_firewall.main, "--raw", "work") == "action=accept\n"


def test_firewall_refuses_a_forward_and_lists_a_forwarding_qube(
    admin_socket: Path, capsys: Capture
) -> None:
    """Forwards are features: the rule list carries accept/drop only, as stock Qubes' does."""
    forward = run(capsys, qvm_portfwd.main, *DEMO_ADD).strip()
    words = ["forwardtype=external", "proto=tcp", "srcports=81", "srchost=0.0.0.0/0"]
    err = error_of(
        capsys, qvm_firewall.main, "qvm-firewall", "work", "add", "action=forward", *words, code=1
    )
    assert "action: forward rules are stored as features portfwd.<id>: use qvm-portfwd" in err
    assert run(capsys, qvm_firewall.main, "--raw", "work") == "action=accept\n"
    table = run(capsys, qvm_firewall.main, "work", "list").splitlines()
    assert table[0].split()[:3] == ["NO", "ACTION", "HOST"]
    assert table[1].split()[:2] == ["0", "accept"] and len(table) == 2
    assert forward in run(capsys, qvm_portfwd.main, "list")


def test_prefs_list_get_set_reset(admin_socket: Path, capsys: Capture) -> None:
    listing = run(capsys, qvm_prefs.main, "work").splitlines()
    netvm = next(line for line in listing if line.startswith("netvm "))
    assert netvm.split() in (["netvm", "-", "sys-firewall"], ["netvm", "D", "sys-firewall"])
    assert run(capsys, qvm_prefs.main, "work", "netvm") == "sys-firewall\n"
    run(capsys, qvm_prefs.main, "work", "netvm", "sys-net")
    assert run(capsys, qvm_prefs.main, "work", "netvm") == "sys-net\n"
    run(capsys, qvm_prefs.main, "work", "netvm", "none")
    assert run(capsys, qvm_prefs.main, "work", "netvm") == ""
    assert "no such property" in error_of(
        capsys, qvm_prefs.main, "qvm-prefs", "work", "colour", code=2
    )
