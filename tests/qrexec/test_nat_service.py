"""Our dom0 service `qubes.PortfwdNat` on its socket, hosting the real controller, called the
way a network qube calls it: natd's qrexec adapter runs a stand-in for qrexec-client-vm that
does what qrexec does with a socket service (header, stdin, stdout; qrexec_stand_in.py)."""

import asyncio
import grp
import os
import socket
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from admin_service import RunningService, exchange, make_service
from qubes_portfwd.adapters.qrexec_nat import SERVICE as ADAPTER_SERVICE
from qubes_portfwd.adapters.qrexec_nat import QrexecNat
from qubes_portfwd.ports.nat_channel import NatRefused, Refusal
from qubes_portfwd.qrexec.nat_service import MAX_PAYLOAD, SERVICE, serve_nat_requests

STAND_IN = Path(__file__).with_name("qrexec_stand_in.py")
WORK = "10.137.0.6"
PERSONAL = "10.137.0.7"
READ_TIMEOUT = 2.0


def _line(client: str = WORK, internal: int = 8080, lifetime: int = 600, wait: int = 0) -> str:
    return (
        f"client={client} proto=tcp internal-port={internal} external-port={internal + 10000} "
        f"lifetime={lifetime} origin=NAT-PMP wait={wait}"
    )


@dataclass
class Dom0:
    running: RunningService
    nat_socket: Path

    def channel(self, qube: str, *extra: str) -> QrexecNat:
        """`qube`'s channel; `extra` are the stand-in's options (--refuse, --header)."""
        program = (sys.executable, str(STAND_IN), "--socket", str(self.nat_socket))
        return QrexecNat((*program, "--source", qube, *extra), timeout=30)

    def stored(self, qube: str) -> list[str]:
        return self.running.client().forward_ids(qube)


def start_nat_service(running: RunningService, path: Path, **options: float) -> None:
    """Serve `qubes.PortfwdNat` on the service's own loop, as the extension does in qubesd."""
    runner = running._runner
    assert runner is not None
    coroutine = serve_nat_requests(runner.service, path, group=None, **options)  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(coroutine, runner.loop).result(timeout=10)


@pytest.fixture
def dom0(tmp_path: Path) -> Iterator[Dom0]:
    running = make_service(tmp_path, agent_timeout=0.05)
    running.start()
    try:
        running.client().nat_policy_set("work", ["ports=1024-65535 action=allow"])
        start_nat_service(running, tmp_path / "nat.sock", read_timeout=READ_TIMEOUT, max_open=1)
        yield Dom0(running, tmp_path / "nat.sock")
    finally:
        running.stop()  # cancels the NAT socket's tasks with the loop's others


def _refusal(call) -> NatRefused:  # type: ignore[no-untyped-def]
    with pytest.raises(NatRefused) as refused:
        call()
    return refused.value


def test_both_ends_name_the_same_service() -> None:
    assert SERVICE == ADAPTER_SERVICE == "qubes.PortfwdNat"


def test_the_socket_is_for_dom0s_qrexec_only(dom0: Dom0) -> None:
    assert stat.S_IMODE(dom0.nat_socket.stat().st_mode) == 0o660


def test_a_grant_is_stored_as_the_targets_feature_and_removed(dom0: Dom0) -> None:
    channel = dom0.channel("sys-firewall")

    granted = channel.request(_line())
    stored = dom0.stored("work")
    removed = channel.request(_line(lifetime=0))

    assert granted["result"] == "granted" and granted["port"] == "18080"
    assert stored == [granted["id"]]
    assert removed == {"result": "removed", "count": "1"}
    assert dom0.stored("work") == []


def test_the_outside_address_is_answered(dom0: Dom0) -> None:
    assert dom0.channel("sys-firewall").address(WORK) == "0.0.0.0"


def test_a_port_the_policy_denies_is_refused_and_nothing_stored(dom0: Dom0) -> None:
    dom0.running.client().nat_policy_set("work", ["ports=1-65535 action=deny"])

    refused = _refusal(lambda: dom0.channel("sys-firewall").request(_line()))

    assert refused.refusal is Refusal.DENIED and "denied by policy" in refused.message
    assert dom0.stored("work") == []


def test_an_ask_waits_for_dom0s_user(dom0: Dom0) -> None:
    admin = dom0.running.client()
    admin.nat_policy_set("work", ["ports=1024-65535 action=ask"])

    pending = dom0.channel("sys-firewall").request(_line())
    shown = admin.nat_pending()
    approved = admin.nat_approve(pending["id"])

    assert pending["result"] == "pending"
    assert [(p["id"], p["qube"], p["via"]) for p in shown] == [
        (pending["id"], "work", "sys-firewall")
    ]
    assert dom0.stored("work") == [approved["id"]]


def test_a_qube_not_directly_behind_the_caller_is_refused(dom0: Dom0) -> None:
    # work is behind sys-firewall, which is behind sys-net: not sys-net's to ask for.
    refused = _refusal(lambda: dom0.channel("sys-net").request(_line()))
    address = _refusal(lambda: dom0.channel("sys-net").address(WORK))

    assert refused.refusal is address.refusal is Refusal.DENIED
    assert "not a qube behind sys-net" in refused.message
    assert dom0.stored("work") == []


def test_a_qube_that_provides_no_network_is_refused(dom0: Dom0) -> None:
    refused = _refusal(lambda: dom0.channel("work").request(_line()))

    assert refused.refusal is Refusal.DENIED and "does not provide network" in refused.message
    assert dom0.stored("work") == []


@pytest.mark.parametrize(
    ("header", "refusal", "words"),
    [
        ("qubes.PortfwdNat+Request nosuchqube keyword adminvm", Refusal.DENIED, "source:"),
        ("qubes.PortfwdNat+Request dom0 keyword adminvm", Refusal.FAILED, "source:"),
        ("qubes.VMShell+ sys-firewall keyword adminvm", Refusal.DENIED, "service:"),
        ("qubes.PortfwdNat+Request sys-firewall name work", Refusal.FAILED, "target:"),
        ("qubes.PortfwdNat+Grant sys-firewall keyword adminvm", Refusal.FAILED, "argument:"),
        ("qubes.PortfwdNat+Request sys-firewall", Refusal.FAILED, "header:"),
        ("qubes.PortfwdNat+Request sys-firewall keyword adminvm \x7f", Refusal.FAILED, "header:"),
    ],
)
def test_a_forged_or_malformed_header_is_refused_with_one_line(
    dom0: Dom0, header: str, refusal: Refusal, words: str
) -> None:
    refused = _refusal(lambda: dom0.channel("sys-firewall", "--header", header).request(_line()))

    assert refused.refusal is refusal
    assert refused.message.startswith(words) and "\n" not in refused.message
    assert dom0.stored("work") == [] and dom0.stored("personal") == []


def test_a_header_without_its_nul_is_refused(dom0: Dom0) -> None:
    answer = exchange(dom0.nat_socket, b"qubes.PortfwdNat+Request sys-firewall keyword adminvm")
    assert answer.startswith(b"2\0ProtocolError\0\0header: the call ended before")


@pytest.mark.parametrize("extra", [MAX_PAYLOAD, 512 * 1024])
def test_an_oversized_payload_is_refused_and_nothing_stored(dom0: Dom0, extra: int) -> None:
    line = _line() + " description=" + "x" * extra

    refused = _refusal(lambda: dom0.channel("sys-firewall").request(line))

    assert refused.refusal is Refusal.FAILED
    assert refused.message == f"payload: larger than {MAX_PAYLOAD} bytes"
    assert dom0.stored("work") == []


def test_a_malformed_request_names_the_field(dom0: Dom0) -> None:
    refused = _refusal(lambda: dom0.channel("sys-firewall").request(_line().replace("tcp", "sctp")))

    assert refused.refusal is Refusal.FAILED and refused.message.startswith("proto:")
    assert dom0.stored("work") == []


def test_a_non_ascii_payload_is_refused(dom0: Dom0) -> None:
    header = b"qubes.PortfwdNat+Request sys-firewall keyword adminvm\0"
    answer = exchange(dom0.nat_socket, header + _line().encode() + b" description=\xff")
    assert answer == b"2\0QubesValueError\0\0request: expected ASCII text\0"


def test_a_call_that_never_ends_is_cut_off_and_others_still_answered(dom0: Dom0) -> None:
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.settimeout(READ_TIMEOUT + 10)
    try:
        stalled.connect(str(dom0.nat_socket))
        stalled.sendall(b"qubes.PortfwdNat+Request sys-firewall keyword adminvm\0client=")
        # While it stalls, dom0's loop answers others.
        assert dom0.channel("sys-firewall").address(WORK) == "0.0.0.0"
        answer = stalled.recv(4096)
    finally:
        stalled.close()
    assert answer == f"2\0ProtocolError\0\0call not complete within {READ_TIMEOUT} s\0".encode()


def test_a_qube_over_its_share_of_open_calls_is_limited(dom0: Dom0) -> None:
    # This service allows one open call per qube: an ask waiting for the user holds it.
    admin = dom0.running.client()
    admin.nat_policy_set("personal", ["ports=1024-65535 action=ask"])
    header = b"qubes.PortfwdNat+Request sys-firewall keyword adminvm\0"
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting.settimeout(30)
    try:
        waiting.connect(str(dom0.nat_socket))
        waiting.sendall(header + _line(PERSONAL, wait=60).encode())
        waiting.shutdown(socket.SHUT_WR)
        _wait_for_pending(admin)

        limited = _refusal(lambda: dom0.channel("sys-firewall").request(_line()))

        admin.nat_deny(admin.nat_pending()[0]["id"])
        denied = waiting.recv(4096)
    finally:
        waiting.close()
    assert limited.refusal is Refusal.LIMITED and "too many requests" in limited.message
    assert denied.startswith(b"2\0PermissionDenied\0\0NAT traversal for personal")
    assert dom0.stored("work") == [] and dom0.stored("personal") == []


def _wait_for_pending(admin) -> None:  # type: ignore[no-untyped-def]
    from admin_service import wait_until

    wait_until(lambda: len(admin.nat_pending()) == 1)


def test_dom0s_policy_refusal_is_a_denial(dom0: Dom0) -> None:
    refused = _refusal(lambda: dom0.channel("sys-firewall", "--refuse").request(_line()))
    assert refused.refusal is Refusal.DENIED and "qrexec policy" in refused.message


def test_no_service_in_dom0_is_a_failure_not_a_hang(tmp_path: Path) -> None:
    program = (sys.executable, str(STAND_IN), "--socket", str(tmp_path / "none.sock"))
    channel = QrexecNat((*program, "--source", "sys-firewall"), timeout=30)

    refused = _refusal(lambda: channel.request(_line()))

    assert refused.refusal is Refusal.FAILED and "exited with 125" in refused.message


def test_a_missing_qrexec_client_is_a_failure(tmp_path: Path) -> None:
    refused = _refusal(lambda: QrexecNat((str(tmp_path / "qrexec-client-vm"),)).address(WORK))
    assert refused.refusal is Refusal.FAILED and "qrexec-client-vm" in refused.message


def test_a_live_service_is_never_replaced_and_a_dead_ones_socket_is(dom0: Dom0) -> None:
    with pytest.raises(FileExistsError, match="already listening"):
        start_nat_service(dom0.running, dom0.nat_socket)
    left_behind = dom0.nat_socket.with_name("old.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(left_behind))
    stale.close()  # bound, never listening: what a killed qubesd leaves

    start_nat_service(dom0.running, left_behind)

    header = b"qubes.PortfwdNat+Address sys-firewall keyword adminvm\0"
    assert exchange(left_behind, header + WORK.encode()) == b"0\x000.0.0.0\n"


def test_the_socket_belongs_to_the_group_qrexec_runs_as(dom0: Dom0) -> None:
    runner = dom0.running._runner
    assert runner is not None
    # Another group than ours, so only the service's chown can have set it.
    group = next(g for g in grp.getgrall() if g.gr_gid != os.getgid())
    path = dom0.nat_socket.with_name("grouped.sock")
    serving = serve_nat_requests(runner.service, path, group=group.gr_name)
    asyncio.run_coroutine_threadsafe(serving, runner.loop).result(timeout=10)

    assert path.stat().st_gid == group.gr_gid
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
