"""Forwards that cannot work are refused at add with the reason, and nothing is stored."""

from pathlib import Path

import pytest

from qubes_lab.tools import qvm_firewall
from qubes_portfwd.cli import qvm_portfwd
from qubes_portfwd.client import AdminClient, QubesdError
from qubes_portfwd.model.rule import ForwardRule, forward_id
from qubes_portfwd.model.rule_text import parse_rule

from .test_cli_service import Capture, error_of, run

INTERNAL = ["add", "work", "tcp", "2222:22", "--internal", "--from"]


def _nothing_stored(admin_socket: Path) -> None:
    client = AdminClient(admin_socket)
    assert client.firewall_get("work") == ["action=accept"]
    assert not any(n.startswith("portfwd.") for n in client.list_features("work"))
    assert client.forwards() == []


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("nosuchqube", "srchost: no qube nosuchqube; expected qubes behind sys-firewall"),
        ("dom0", "srchost: no qube dom0; expected qubes behind sys-firewall"),
        ("vault", "srchost: vault is not behind sys-firewall (its netvm is none)"),
        ("sys-firewall", "srchost: sys-firewall is not behind sys-firewall (its netvm is sys-net)"),
        ("work", "srchost: work is the target itself; name other qubes"),
    ],
)
def test_internal_forward_from_a_qube_that_cannot_reach_it(
    admin_socket: Path, capsys: Capture, source: str, reason: str
) -> None:
    err = error_of(capsys, qvm_portfwd.main, "qvm-portfwd", *INTERNAL, source, code=1)
    assert reason in err
    _nothing_stored(admin_socket)


@pytest.mark.parametrize(
    ("via", "reason"),
    [
        ("sys-net,sys-firewall", "via: sys-net,sys-firewall is not work's path"),
        ("sys-firewall", "via: sys-firewall is not work's path"),
        ("nosuchqube,sys-net", "via: nosuchqube,sys-net is not work's path"),
    ],
)
def test_forward_with_a_path_that_is_not_the_qubes(
    admin_socket: Path, via: str, reason: str
) -> None:
    line = (
        "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
        f"srchost=192.0.2.0/24 via={via}"
    )
    rule = parse_rule(line)
    assert isinstance(rule, ForwardRule)
    with pytest.raises(QubesdError) as caught:
        AdminClient(admin_socket).set_feature("work", f"portfwd.{forward_id('work', rule)}", line)
    assert reason in caught.value.message
    assert "expected its path now (sys-firewall,sys-net" in caught.value.message
    _nothing_stored(admin_socket)


def test_a_stored_forward_keeps_its_old_path_through_a_netvm_change(
    admin_socket: Path, capsys: Capture
) -> None:
    """Inactive after a netvm change, it stays stored as it was; a rule-list write leaves it."""
    forward = run(capsys, qvm_portfwd.main, *INTERNAL, "personal").strip()
    client = AdminClient(admin_socket)
    client.set_property("work", "netvm", "sys-net")
    run(capsys, qvm_firewall.main, "work", "add", "drop", "198.51.100.7")
    listed = {f.id: f for f in client.forwards()}
    assert listed[forward].reason is not None and "netvm path changed" in listed[forward].reason
    assert "via=sys-firewall" in client.get_feature("work", f"portfwd.{forward}")


def test_list_of_an_unknown_qube_is_an_error(admin_socket: Path, capsys: Capture) -> None:
    err = error_of(capsys, qvm_portfwd.main, "qvm-portfwd", "list", "nosuchqube", code=2)
    assert "QUBE: no qube 'nosuchqube'" in err
    assert run(capsys, qvm_portfwd.main, "list", "vault").strip().splitlines()[1:] == []
