"""`--on-netvm-change`: the admin service runs the platform's command with the qube's name
after a netvm change it committed; the command's failure or hang never undoes the change."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_service import ThreadedService, make_service
from qubes_lab.qubesd.__main__ import build_service, parse_args
from qubes_lab.qubesd.platform_hook import NetvmChangeHook
from qubes_portfwd.client import AdminClient

# Records its last argument (the qube) and its PID, exits with argv[2], after argv[3] seconds.
RECORDER = (
    "import os, sys, time; "
    "open(sys.argv[1], 'a').write(f'{os.getpid()} {sys.argv[-1]}\\n'); "
    "time.sleep(float(sys.argv[3])); sys.exit(int(sys.argv[2]))"
)


# Copies what the new netvm's entry store holds at the moment the command runs.
STORE_COPIER = (
    "import pathlib, sys; store = pathlib.Path(sys.argv[1]); "
    "pathlib.Path(sys.argv[2]).write_text(store.read_text() if store.exists() else '')"
)


def hooked_client(
    tmp_path: Path, exit_code: int, seconds: float, timeout: float, command: str | None = None
) -> Iterator[tuple[AdminClient, Path]]:
    running = make_service(tmp_path, agent_timeout=0.05)
    calls = tmp_path / "calls"
    command = command or f'{sys.executable} -c "{RECORDER}" {calls} {exit_code} {seconds}'
    argv = [
        "--socket", str(running.socket_path),
        "--state-dir", str(running.state_dir),
        "--topology", str(tmp_path / "topology.json"),
        "--qubesdb-dir", str(running.qubesdb_dir),
        "--boot-id-file", str(running.boot_id_file),
        "--agent-timeout", "0.05",
        "--on-netvm-change", command,
        "--on-netvm-change-timeout", str(timeout),
    ]  # fmt: skip
    service, socket_path, stores_root = build_service(parse_args(argv))
    runner = ThreadedService(service, socket_path, stores_root, running.boot_id_file)
    runner.start()
    try:
        yield AdminClient(socket_path, timeout=30), calls
    finally:
        runner.stop()


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[AdminClient, Path]]:
    yield from hooked_client(tmp_path, 0, 0, 10)


def qubes_called(calls: Path) -> list[str]:
    if not calls.exists():
        return []
    return [line.split()[1] for line in calls.read_text().splitlines()]


def test_runs_after_each_netvm_change_only(hooked: tuple[AdminClient, Path]) -> None:
    client, calls = hooked
    client.set_property("work", "netvm", "other-net")
    assert qubes_called(calls) == ["work"]  # done by the time Set returned
    client.set_property("work", "netvm", "other-net")  # no change: nothing to re-attach
    client.set_feature("work", "ipv6", "")
    client.reset_property("work", "netvm")
    client.set_property("personal", "netvm", "")
    assert qubes_called(calls) == ["work", "work", "personal"]
    assert client.get_property("work", "netvm").value == "sys-firewall"


def test_runs_before_the_new_netvm_gets_the_qube_entries(tmp_path: Path) -> None:
    """The qube is re-attached before anything is published for it: otherwise the new
    netvm's agent refuses its forwards (target not behind it yet) until a later reconcile."""
    store = tmp_path / "qubesdb" / "other-net" / "log"
    seen = tmp_path / "seen.json"
    command = f'{sys.executable} -c "{STORE_COPIER}" {store} {seen}'
    for client, _calls in hooked_client(tmp_path, 0, 0, 10, command):
        client.set_property("work", "netvm", "other-net")
        # Qubes' own firewall entries come with the change (qubesd writes them); nothing of
        # the controller's reaches the new netvm before the re-attach.
        assert "/qubes-portfwd" not in seen.read_text()
        assert "/qubes-firewall/10.137.0.6/policy" in store.read_text()


def test_a_failing_command_does_not_undo_the_change(tmp_path: Path) -> None:
    for client, calls in hooked_client(tmp_path, 3, 0, 10):
        client.set_property("work", "netvm", "other-net")
        assert qubes_called(calls) == ["work"]
        assert client.get_property("work", "netvm").value == "other-net"


def test_a_hanging_command_is_killed_at_its_timeout(tmp_path: Path) -> None:
    for client, calls in hooked_client(tmp_path, 0, 60, 0.5):
        client.set_property("work", "netvm", "other-net")  # the client's own timeout is 30 s
        assert client.get_property("work", "netvm").value == "other-net"
        pid = int(calls.read_text().split()[0])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_an_empty_command_is_refused() -> None:
    with pytest.raises(ValueError, match="--on-netvm-change"):
        NetvmChangeHook.from_command("  ")
