"""Rule-list writers (qvm-firewall) racing forward adds and deletes (qvm-portfwd): every
acknowledged change is kept and no deleted forward comes back, in the store or any kernel."""

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from lifecycle_lab import CLI_TIMEOUT, LabUser
from qubes_lab.builder import Lab
from qubes_lab.tools import module_of

pytestmark = pytest.mark.lab

WRITERS = 20
HOPS = ("sys-net", "sys-firewall")
FIRST_PORT = 21000


@pytest.fixture
def user(lab: Lab) -> Iterator[LabUser]:
    """The session's lab, with work's rules back to Qubes' default afterwards."""
    user = LabUser(lab)
    try:
        yield user
    finally:
        user.cli("qvm_firewall", "work", "reset")
        client = user.client()
        for forward_id in client.forward_ids("work"):
            client.remove_forward("work", forward_id)


def _start(lab: Lab, tool: str, *argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "QUBESD_SOCKET": str(lab.admin_socket)}
    return subprocess.Popen(
        [sys.executable, "-m", module_of(tool), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_all(lab: Lab, commands: Sequence[tuple[str, ...]]) -> list[str]:
    """Start every command at once; each must succeed. Their outputs, in order."""
    running = [_start(lab, *command) for command in commands]
    outputs = []
    try:
        for command, process in zip(commands, running, strict=True):
            out, err = process.communicate(timeout=CLI_TIMEOUT * 2)
            assert process.returncode == 0, f"{' '.join(command)}: {err}"
            outputs.append(out)
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
    return outputs


def _outbound_rule(n: int) -> tuple[str, ...]:
    return ("qvm_firewall", "work", "add", "accept", f"198.51.100.{n}", "tcp", "443")


def _stored_outbound(user: LabUser) -> set[str]:
    listed = user.ok("qvm_firewall", "work", "--raw").splitlines()
    return {line for line in listed if line.startswith("action=accept dst4=198.51.100.")}


def _expected_outbound(count: int) -> set[str]:
    return {
        f"action=accept dst4=198.51.100.{n}/32 proto=tcp dstports=443-443" for n in range(count)
    }


def _add_forward(n: int) -> tuple[str, ...]:
    port = str(FIRST_PORT + n)
    return ("qvm_portfwd", "add", "work", "tcp", f"{port}:{port}", "--external", "--from",
            "192.0.2.0/24")  # fmt: skip


def test_parallel_rule_list_writers_lose_nothing(user: LabUser) -> None:
    _run_all(user.lab, [_outbound_rule(n) for n in range(2 * WRITERS)])
    assert _stored_outbound(user) == _expected_outbound(2 * WRITERS)


def test_parallel_forward_adds_and_rule_list_writers_keep_both(user: LabUser) -> None:
    commands = [c for n in range(WRITERS) for c in (_add_forward(n), _outbound_rule(n))]
    outputs = _run_all(user.lab, commands)
    added = {out.strip() for out in outputs[0::2]}
    try:
        assert _stored_outbound(user) == _expected_outbound(WRITERS)
        assert set(user.forwards()) >= added
        assert len(added) == WRITERS
    finally:
        for forward_id in added:
            user.cli("qvm_portfwd", "del", forward_id)


def test_deleted_forwards_never_come_back_under_rule_list_writers(user: LabUser) -> None:
    added = [user.add(*_add_forward(n)[2:]) for n in range(WRITERS)]
    commands = [
        c
        for n, forward_id in enumerate(added)
        for c in (("qvm_portfwd", "del", forward_id), _outbound_rule(n))
    ]
    _run_all(user.lab, commands)
    assert _stored_outbound(user) == _expected_outbound(WRITERS)
    alive = set(added) & set(user.forwards())
    assert not alive, f"deleted forwards listed again: {sorted(alive)}"
    # Publish once more, synchronously: whatever the store holds now is what kernels get.
    user.ok("qvm_firewall", "work", "--reload")
    for qube in HOPS:
        in_kernel = [f for f in added if user.dnat_in_kernel(qube, f)]
        assert not in_kernel, f"deleted forwards alive in {qube}'s kernel: {in_kernel}"
    open_ports = [
        FIRST_PORT + n for n in range(WRITERS) if user.input_allowed("work", FIRST_PORT + n)
    ]
    assert not open_ports, f"work still accepts deleted forwards' ports {open_ports}"
