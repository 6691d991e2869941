"""Netvm changes and conflicts in a lab, through qvm-prefs / qvm-portfwd: a pinned forward goes
inactive everywhere, rebind and follow move it, a conflict is refused at Set or, when a netvm
change brings it, the newer forward loses, also after a service restart."""

from collections.abc import Iterator

import pytest

from lifecycle_lab import LabUser, echo_server, wait_until
from qubes_lab.builder import Lab
from qubes_portfwd.client import QubesdError

pytestmark = pytest.mark.lab

OLD_PATH = ["sys-net", "sys-firewall", "work"]
VPN_PATH = ["sys-vpn", "work"]
TIMEOUT = 15.0
ANY = ("--external", "--from", "any")


@pytest.fixture(scope="module")
def user(private_lab: Lab) -> Iterator[LabUser]:
    with echo_server(private_lab, "work"):
        yield LabUser(private_lab)


@pytest.fixture(autouse=True)
def clean(user: LabUser) -> Iterator[None]:
    yield
    user.cli("qvm_prefs", "work", "netvm", "sys-firewall")
    user.cli("qvm_prefs", "vpn-work", "netvm", "sys-vpn")
    user.cli("qvm_prefs", "sys-vpn", "netvm", "sys-firewall")
    user.client().set_feature("sys-vpn", "portfwd-tunnel", "1")
    client = user.client()
    for qube in ("work", "personal", "vpn-work"):
        user.cli("qvm_firewall", qube, "reset")
        for forward_id in client.forward_ids(qube):
            client.remove_forward(qube, forward_id)


def held_by(user: LabUser, forward_id: str, qubes: list[str]) -> list[str]:
    return [q for q in qubes if user.dnat_in_kernel(q, forward_id)]


def test_pinned_forward_goes_inactive_everywhere_and_rebind_moves_it(user: LabUser) -> None:
    forward_id = user.add("work", "tcp", "80:8080", *ANY)
    wait_until(lambda: user.applied(forward_id, OLD_PATH), TIMEOUT, "applied")
    assert user.lan_connects(80)

    user.ok("qvm_prefs", "work", "netvm", "sys-vpn")
    network = ["sys-net", "sys-firewall", "sys-vpn"]
    wait_until(lambda: not held_by(user, forward_id, network), TIMEOUT, "old path cleaned")
    wait_until(lambda: not user.input_allowed("work", 8080), TIMEOUT, "target closed")
    listing = user.ok("qvm_portfwd", "list")
    assert forward_id in listing and "inactive: the netvm path changed" in listing
    assert not user.lan_connects(80)

    user.ok("qvm_portfwd", "rebind", forward_id)
    wait_until(lambda: user.applied(forward_id, VPN_PATH), TIMEOUT, "active on the new path")
    assert held_by(user, forward_id, network) == ["sys-vpn"]
    assert "via=sys-vpn" in user.client().get_feature("work", f"portfwd.{forward_id}")


def test_following_forward_moves_with_the_netvm_and_back(user: LabUser) -> None:
    forward_id = user.add("work", "tcp", "82:8080", *ANY, "--follow")
    wait_until(lambda: user.applied(forward_id, OLD_PATH), TIMEOUT, "applied")
    assert user.lan_connects(82)

    user.ok("qvm_prefs", "work", "netvm", "sys-vpn")
    wait_until(lambda: user.applied(forward_id, VPN_PATH), TIMEOUT, "moved to sys-vpn")
    assert held_by(user, forward_id, ["sys-net", "sys-firewall", "sys-vpn"]) == ["sys-vpn"]
    assert not user.lan_connects(82)

    user.ok("qvm_prefs", "work", "netvm", "sys-firewall")
    wait_until(lambda: user.applied(forward_id, OLD_PATH), TIMEOUT, "moved back")
    assert held_by(user, forward_id, ["sys-net", "sys-firewall", "sys-vpn"]) == OLD_PATH[:2]
    assert user.lan_connects(82)


def test_netvm_change_in_the_middle_of_the_path(user: LabUser) -> None:
    """sys-vpn made an ordinary network qube, so vpn-work's path has it in the middle."""
    user.client().remove_feature("sys-vpn", "portfwd-tunnel")
    path = ["sys-net", "sys-firewall", "sys-vpn", "vpn-work"]
    pinned = user.add("vpn-work", "tcp", "83:8083", *ANY)
    following = user.add("vpn-work", "tcp", "84:8084", *ANY, "--follow")
    wait_until(lambda: user.applied(pinned, path), TIMEOUT, "pinned applied")
    wait_until(lambda: user.applied(following, path), TIMEOUT, "following applied")

    user.ok("qvm_prefs", "sys-vpn", "netvm", "sys-net")
    short = ["sys-net", "sys-vpn", "vpn-work"]
    wait_until(lambda: user.applied(following, short), TIMEOUT, "following moved")
    wait_until(lambda: not held_by(user, pinned, path[:3]), TIMEOUT, "pinned gone")
    assert held_by(user, following, path[:3]) == ["sys-net", "sys-vpn"]
    listing = user.ok("qvm_portfwd", "list", "vpn-work")
    assert "now sys-vpn,sys-net" in listing


def test_second_forward_on_a_taken_port_is_refused_naming_the_first(user: LabUser) -> None:
    first = user.add("work", "tcp", "90:8080", *ANY)
    error = user.refused("qvm_portfwd", "add", "personal", "tcp", "90:8081", *ANY)
    assert f"forward {first} of work" in error and "tcp/90" in error
    # Set directly as the feature, complete, it meets the same check.
    rule = "action=forward forwardtype=external proto=tcp srcports=90 srchost=0.0.0.0/0"
    with pytest.raises(QubesdError) as caught:
        user.client().add_forward("personal", rule)
    assert f"forward {first} of work" in caught.value.message

    internal = user.add("work", "tcp", "2222", "--internal", "--from", "personal")
    error = user.refused(
        "qvm_portfwd", "add", "personal", "tcp", "2222", "--internal", "--from", "work"
    )
    assert f"forward {internal} of work" in error
    assert "on sys-firewall (downstream side" in error
    # An outside port 2222 through sys-firewall is on its other side (issue 14 item 4).
    user.add("personal", "tcp", "2222", *ANY)


def test_conflict_from_a_netvm_change_makes_the_newer_inactive_across_restarts(
    user: LabUser,
) -> None:
    older = user.add("work", "tcp", "95:8080", *ANY)
    # Named "vpn-work", the newer forward would win a tie by name: only its rank loses it.
    newer = user.add("vpn-work", "tcp", "95:8080", *ANY, "--follow")
    wait_until(lambda: user.applied(older, OLD_PATH), TIMEOUT, "older applied")
    wait_until(lambda: user.applied(newer, ["sys-vpn", "vpn-work"]), TIMEOUT, "newer applied")

    user.ok("qvm_prefs", "vpn-work", "netvm", "sys-firewall")

    def newer_lost() -> bool:
        status = user.status(newer)
        return status is not None and status.state == "conflict"

    wait_until(newer_lost, TIMEOUT, "newer forward in conflict")
    wait_until(lambda: not held_by(user, newer, ["sys-vpn"]), TIMEOUT, "newer left sys-vpn")
    for restarted in (False, True):
        if restarted:
            user.lab.restart_admin()
        status = user.status(newer)
        assert status is not None and status.state == "conflict"
        assert f"forward {older} of work" in (status.reason or "")
        assert user.applied(older, OLD_PATH)
        assert user.lan_connects(95)
    assert "conflict: tcp/95" in user.ok("qvm_portfwd", "list", "vpn-work")


def test_rebind_into_a_port_another_forward_holds_is_refused(user: LabUser) -> None:
    pinned = user.add("work", "tcp", "96:8080", *ANY)
    wait_until(lambda: user.applied(pinned, OLD_PATH), TIMEOUT, "applied")
    user.ok("qvm_prefs", "work", "netvm", "sys-vpn")
    holder = user.add("vpn-work", "tcp", "96:8080", *ANY)
    wait_until(lambda: user.applied(holder, ["sys-vpn", "vpn-work"]), TIMEOUT, "holder applied")

    error = user.refused("qvm_portfwd", "rebind", pinned)
    assert f"forward {holder} of vpn-work" in error
    assert user.applied(holder, ["sys-vpn", "vpn-work"])
    assert "via=sys-firewall,sys-net" in user.client().get_feature("work", f"portfwd.{pinned}")
