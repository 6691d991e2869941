"""dom0's state that recovery must keep, stored and checked as a user does (qvm-* CLIs,
packets from the LAN); the lab's CLI as an admin runs it. No tests here."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from lifecycle_lab import LabUser, echo_server, wait_until
from qubes_lab import processes
from qubes_lab.state import LabState

LAB_TIMEOUT = 300.0  # a full rebuild on a loaded 2-vCPU machine; only a bound
TIMEOUT = 20.0
PATH = ["sys-net", "sys-firewall", "work"]
ANY = ("--external", "--from", "any")
PERSONAL_IP = "10.137.0.77"  # not the qid's address: a property only dom0 knows


@dataclass(frozen=True)
class Stored:
    """What dom0 keeps that recovery must not lose."""

    forward: str
    forwards: frozenset[str]


def qubes_lab(user: LabUser, *argv: str) -> subprocess.CompletedProcess[str]:
    """`qubes-lab --lab NAME …` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "qubes_lab", "--lab", user.lab.name, *argv],
        capture_output=True,
        text=True,
        timeout=LAB_TIMEOUT,
    )


def store_state(user: LabUser) -> Stored:
    """Two forwards, a property and a feature, stored through the admin service."""
    forward = user.add("work", "tcp", "80:8080", *ANY)
    user.add("personal", "tcp", "81:8081", *ANY)
    user.ok("qvm_prefs", "personal", "ip", PERSONAL_IP)
    user.client().set_feature("work", "recovery-note", "kept")
    wait_until(lambda: user.applied(forward, PATH), TIMEOUT, "forward applied")
    return Stored(forward, frozenset(user.forwards()))


def assert_kept(user: LabUser, stored: Stored) -> None:
    """Every forward listed and carrying packets, the property and the feature as set."""
    assert frozenset(user.forwards()) == stored.forwards
    wait_until(lambda: user.applied(stored.forward, PATH), TIMEOUT, "forward applied again")
    with echo_server(user.lab, "work"):
        assert user.lan_connects(80)
    assert user.ok("qvm_prefs", "personal", "ip").strip() == PERSONAL_IP
    assert user.client().get_feature("work", "recovery-note") == "kept"


def record(user: LabUser) -> LabState:
    return user.lab.require_state()


def pid_of(user: LabUser, role: str) -> int:
    process = record(user).process(role)
    assert process is not None and processes.is_running(process), role
    return process.pid


def pids_but(user: LabUser, role: str) -> dict[str, int]:
    return {p.role: p.pid for p in record(user).processes if p.role != role}


def kill_9(user: LabUser, role: str) -> int:
    """SIGKILL the lab's process `role`; its PID, once it is gone."""
    process = record(user).process(role)
    assert process is not None and processes.is_running(process)
    os.kill(process.pid, signal.SIGKILL)
    wait_until(lambda: not processes.is_running(process), TIMEOUT, f"{role} gone")
    assert not user.lab.status().healthy
    return process.pid
