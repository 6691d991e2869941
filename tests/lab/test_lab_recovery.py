"""Recovery keeps dom0's state: `qubes-lab up` on a degraded lab restarts exactly what died
(or rebuilds a qube, or the host) and every stored forward, property and feature stays;
`qubes-lab restart` restarts one named process."""

import pytest
from recovery_lab import (
    PERSONAL_IP,
    Stored,
    assert_kept,
    kill_9,
    pid_of,
    pids_but,
    qubes_lab,
    record,
    store_state,
)

from lifecycle_lab import LabUser
from qubes_lab import netns, processes, provider_natpmp, tunnel_keeper
from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

ASK_TIMEOUT = "5"  # seconds; natpmpc and the resolver retry long when nobody answers


@pytest.fixture(scope="module")
def user(private_lab: Lab) -> LabUser:
    return LabUser(private_lab)


@pytest.fixture(scope="module")
def stored(user: LabUser) -> Stored:
    return store_state(user)


def up(user: LabUser) -> str:
    done = qubes_lab(user, "up")
    assert done.returncode == 0, done.stderr
    assert user.lab.status().healthy, done.stdout
    return done.stdout


@pytest.mark.parametrize("role", ["admind", "agent:work", "agent:sys-net", "natd:sys-firewall"])
def test_up_after_a_process_was_killed_restarts_it_and_keeps_dom0s_state(
    user: LabUser, stored: Stored, role: str
) -> None:
    others = pids_but(user, role)
    old = kill_9(user, role)
    shown = up(user)
    assert_kept(user, stored)
    assert f"restarted {role}" in shown
    assert pid_of(user, role) != old
    assert pids_but(user, role) == others  # exactly what died


def test_up_on_a_healthy_lab_changes_nothing(user: LabUser, stored: Stored) -> None:
    before = record(user)
    assert "already up" in up(user)
    assert record(user) == before
    assert_kept(user, stored)


def test_up_rebuilds_a_qube_whose_namespace_is_gone(user: LabUser, stored: Stored) -> None:
    agent = pid_of(user, "agent:personal")
    netns.delete(user.lab.netns("personal"))  # its agent keeps the old namespace alive
    shown = up(user)
    assert "rebuilt qube personal" in shown
    assert pid_of(user, "agent:personal") != agent
    # It started with the properties dom0 has for it now.
    address = user.lab.run("personal", ["ip", "-4", "-br", "addr"], capture_output=True, text=True)
    assert PERSONAL_IP in address.stdout
    assert_kept(user, stored)


def test_up_restarts_the_tunnel_when_one_end_died(user: LabUser, stored: Stored) -> None:
    role = f"wireguard-go:{user.lab.netns('sys-vpn')}"
    kill_9(user, role)
    assert "restarted wireguard-go" in up(user)
    # sys-vpn's resolver is the provider's, on the far side of the tunnel.
    a = user.lab.addresses
    asked = ["timeout", ASK_TIMEOUT, "getent", "ahostsv4", a.server_name]
    answer = user.lab.run("sys-vpn", asked, capture_output=True, text=True)
    assert str(a.server4) in answer.stdout, answer.stderr
    assert_kept(user, stored)


def test_up_restarts_provider_pieces_with_their_options(user: LabUser, stored: Stored) -> None:
    provider_natpmp.start(user.lab, lease=30)
    tunnel_keeper.start(user.lab, "sys-vpn", lifetime=45)
    try:
        kill_9(user, provider_natpmp.ROLE)
        kill_9(user, tunnel_keeper.role("sys-vpn"))
        shown = up(user)
        assert f"restarted {provider_natpmp.ROLE}" in shown
        assert "restarted tunnel-keeper:sys-vpn" in shown
        keeper = record(user).process(tunnel_keeper.role("sys-vpn"))
        responder = record(user).process(provider_natpmp.ROLE)
        assert keeper is not None and processes.option(keeper, "--lifetime") == "45"
        assert responder is not None and processes.option(responder, "--lease") == "30"
        gateway = str(user.lab.addresses.provider_tunnel4)
        asked = ["timeout", ASK_TIMEOUT, "natpmpc", "-g", gateway]
        answer = user.lab.run("sys-vpn", asked, capture_output=True, text=True)
        assert "Public IP address" in answer.stdout, answer.stderr
    finally:
        tunnel_keeper.stop(user.lab, "sys-vpn")
        provider_natpmp.stop(user.lab)
    assert user.lab.status().healthy
    assert_kept(user, stored)


def test_up_rebuilds_the_host_when_an_outside_namespace_is_gone(
    user: LabUser, stored: Stored
) -> None:
    boot_id = user.lab.boot_id_file.read_text()
    netns.delete(user.lab.netns("lan"))
    shown = up(user)
    assert "rebuilt the lab" in shown and "dom0's state and boot id kept" in shown
    assert user.lab.boot_id_file.read_text() == boot_id
    assert_kept(user, stored)


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["admind"], "admind"),
        (["agent", "work"], "agent:work"),
        (["natd:sys-firewall"], "natd:sys-firewall"),
        (["dns", "lan"], "dns:lan"),
    ],
)
def test_restart_restarts_one_named_process(
    user: LabUser, stored: Stored, argv: list[str], role: str
) -> None:
    others = pids_but(user, role)
    old = pid_of(user, role)
    done = qubes_lab(user, "restart", *argv)
    assert done.returncode == 0, done.stderr
    assert f"restarted {role} (pid {old}, now {pid_of(user, role)})" in done.stdout
    assert pid_of(user, role) != old
    assert pids_but(user, role) == others
    assert user.lab.status().healthy
    assert_kept(user, stored)


def test_restart_of_a_dead_process_starts_it(user: LabUser, stored: Stored) -> None:
    kill_9(user, "agent:personal")
    done = qubes_lab(user, "restart", "agent", "personal")
    assert done.returncode == 0, done.stderr
    assert user.lab.status().healthy
    assert_kept(user, stored)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["agent", "nosuch"], "agent:nosuch"),
        (["natd", "work"], "natd:work"),
        (["bogus"], "bogus"),
        (["agent"], "'agent'"),
        (["admind", "work"], "admind:work"),
        (["agent", "work", "extra"], "extra"),
        (["agent", "../work"], "../work"),
        ([], "PROCESS"),
    ],
)
def test_restart_of_an_unknown_process_is_one_line_and_changes_nothing(
    user: LabUser, stored: Stored, argv: list[str], named: str
) -> None:
    before = record(user)
    done = qubes_lab(user, "restart", *argv)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and named in lines[0], done.stderr
    assert record(user) == before
