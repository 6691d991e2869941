"""natd's calls through Qubes' real qrexec, built from the pinned sources with vchan over Unix
sockets: qrexec-client-vm and qrexec-agent play the network qube, qrexec-daemon plays dom0's
side of it and evaluates the call with Qubes' policy code over our policy file, then hands
it to our service's socket (`/etc/qubes-rpc/qubes.PortfwdNat` a symlink to it, as installed)
hosting the real controller. Only Xen is missing: vchan runs over Unix sockets."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from qrexec_build import QrexecBuild, build

from admin_service import RunningService, make_service, wait_until
from qubes_lab import upstream
from qubes_portfwd.adapters.qrexec_nat import EXIT_REFUSED, QrexecNat
from qubes_portfwd.ports.nat_channel import NatRefused, Refusal
from qubes_portfwd.qrexec.header import ServiceCall, parse_header, split_header
from qubes_portfwd.qrexec.nat_service import serve_nat_requests

HERE = Path(__file__).parent
POLICY_FILE = HERE.parents[1] / "packaging/dom0/policy/50-qubes-portfwd.policy"
WORK = "10.137.0.6"
# The lab's small topology: sys-net (2) -> sys-firewall (3) -> work (6).
DOMAIN_IDS = {"sys-net": 2, "sys-firewall": 3}


def _line(lifetime: int = 600) -> str:
    return (
        f"client={WORK} proto=tcp internal-port=8080 external-port=18080 lifetime={lifetime} "
        "origin=NAT-PMP wait=0"
    )


@dataclass
class QrexecHost:
    """dom0's qrexec side and the network qubes' agents, as processes this test owns."""

    tmp: Path
    qrexec: QrexecBuild
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vchan = self.tmp / "vchan"
        self.daemons = self.tmp / "daemons"
        self.rpc = self.tmp / "qubes-rpc"
        for folder in (self.vchan, self.daemons, self.rpc, self.tmp / "rpc-config"):
            folder.mkdir()
        policy = self.tmp / "policy.d"
        policy.mkdir()
        shutil.copy(POLICY_FILE, policy)
        admin = upstream.source_tree("qubes-core-admin")
        shutil.copy(admin / "qubes-rpc-policy" / "90-default.policy", policy)
        (self.tmp / "system.json").write_text(json.dumps(_system_info()))
        program = self.tmp / "qrexec-policy-exec"
        program.write_text(
            f'#!/bin/sh\nexec {sys.executable} {HERE / "qrexec_policy_program.py"} "$@"\n'
        )
        program.chmod(0o755)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(self.qrexec.python_dir),
            "PORTFWD_POLICY_DIR": str(policy),
            "PORTFWD_SYSTEM_INFO": str(self.tmp / "system.json"),
            "QREXEC_SERVICE_PATH": str(self.rpc),
            "QUBES_RPC_CONFIG_PATH": str(self.tmp / "rpc-config"),
            "VCHAN_SOCKET_DIR": str(self.vchan),
        }
        self.log = (self.tmp / "qrexec.log").open("wb")

    def install_service(self, socket_path: Path) -> None:
        """What the dom0 package installs: the service name linked to our socket."""
        (self.rpc / "qubes.PortfwdNat").symlink_to(socket_path)

    def start_qube(self, name: str) -> None:
        domid = DOMAIN_IDS[name]
        agent_env = {**self.env, "VCHAN_DOMAIN": str(domid)}
        agent = [str(self.qrexec.agent), f"--agent-socket={self._agent(name)}", "--no-fork-server"]
        self._spawn(agent, agent_env)
        daemon = [
            str(self.qrexec.daemon),
            f"--uuid=00000000-0000-0000-0000-{domid:012d}",
            f"--socket-dir={self.daemons}",
            f"--policy-program={self.tmp / 'qrexec-policy-exec'}",
            "--direct",
            str(domid),
            name,
        ]
        self._spawn(daemon, {**self.env, "VCHAN_DOMAIN": "0"})
        # Both ends are up once the agent listens and the daemon has its socket for the qube.
        wait_until(lambda: self._agent(name).exists())
        wait_until(lambda: (self.daemons / f"qrexec.{domid}").exists())

    def client_vm(self, name: str) -> tuple[str, ...]:
        """The argv prefix of qrexec-client-vm as run inside `name`."""
        vchan_env = (f"VCHAN_DOMAIN={DOMAIN_IDS[name]}", f"VCHAN_SOCKET_DIR={self.vchan}")
        agent = f"--agent-socket={self._agent(name)}"
        return ("env", *vchan_env, str(self.qrexec.client_vm), agent)

    def _agent(self, name: str) -> Path:
        return self.tmp / f"agent-{name}.sock"

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log)
        self.processes.append(process)

    def stop(self) -> None:
        # The daemons first: a daemon whose agent went away first spins until it is stopped.
        for process in sorted(self.processes, key=lambda p: "daemon" not in str(p.args[0])):
            process.kill()
            process.wait(timeout=10)
        self.log.close()


def _system_info() -> dict[str, dict[str, dict[str, object]]]:
    kinds = {"dom0": ("AdminVM", 0), "sys-net": ("AppVM", 2), "sys-firewall": ("AppVM", 3)}
    return {
        "domains": {
            name: {
                "name": name,
                "type": kind,
                "uuid": f"00000000-0000-0000-0000-{domid:012d}",
                "tags": [],
                "icon": "",
                "guivm": None,
                "default_dispvm": None,
                "template_for_dispvms": False,
                "power_state": "Running",
            }
            for name, (kind, domid) in kinds.items()
        }
    }


@pytest.fixture(scope="module")
def qrexec() -> QrexecBuild:
    try:
        upstream.source_tree("qubes-core-admin")  # its default policy sits beside ours
        return build()
    except upstream.UpstreamUnavailable as err:
        pytest.skip(f"Qubes' qrexec not available: {err}")  # CI always has it and fails here


@pytest.fixture
def host(tmp_path: Path, qrexec: QrexecBuild) -> Iterator[QrexecHost]:
    (tmp_path / "q").mkdir()
    running_host = QrexecHost(tmp_path / "q", qrexec)
    try:
        yield running_host
    finally:
        running_host.stop()


@pytest.fixture
def dom0(tmp_path: Path, host: QrexecHost) -> Iterator[RunningService]:
    running = make_service(tmp_path, agent_timeout=0.05)
    running.start()
    try:
        running.client().nat_policy_set("work", ["ports=1024-65535 action=allow"])
        runner = running._runner
        assert runner is not None
        nat_socket = tmp_path / "nat.sock"
        serving = serve_nat_requests(runner.service, nat_socket, group=None)
        asyncio.run_coroutine_threadsafe(serving, runner.loop).result(timeout=10)
        host.install_service(nat_socket)
        yield running
    finally:
        running.stop()


class CapturingService:
    """A socket service for one call: keeps what qrexec sent it and answers `0\\0captured`."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.listener.settimeout(30)
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
            self.received.append(b"".join(chunks))
            connection.sendall(b"0\0captured")

    def close(self) -> None:
        self.thread.join(timeout=30)
        self.listener.close()


@pytest.mark.parametrize(("target", "named"), [("@adminvm", "@adminvm"), ("dom0", "dom0")])
def test_qrexec_hands_a_socket_service_the_header_our_codec_reads(
    tmp_path: Path, host: QrexecHost, target: str, named: str
) -> None:
    capture = CapturingService(tmp_path / "capture.sock")
    host.install_service(tmp_path / "capture.sock")
    host.start_qube("sys-firewall")
    try:
        argv = [*host.client_vm("sys-firewall"), target, "qubes.PortfwdNat+Request"]
        done = subprocess.run(argv, input=b"client=x", capture_output=True, timeout=30)
    finally:
        capture.close()

    assert (done.returncode, done.stdout) == (0, b"0\0captured"), done.stderr
    [received] = capture.received
    split = split_header(received)
    assert split is not None
    header, payload = split
    assert payload == b"client=x"
    assert parse_header(header) == ServiceCall("qubes.PortfwdNat", "Request", "sys-firewall", named)


def test_a_grant_through_qrexec_is_stored_and_removed(
    host: QrexecHost, dom0: RunningService
) -> None:
    host.start_qube("sys-firewall")
    channel = QrexecNat(host.client_vm("sys-firewall"), timeout=30)

    granted = channel.request(_line())
    stored = dom0.client().forward_ids("work")
    address = channel.address(WORK)
    removed = channel.request(_line(lifetime=0))

    assert granted["result"] == "granted" and stored == [granted["id"]]
    assert address == "0.0.0.0"
    assert removed == {"result": "removed", "count": "1"}
    assert dom0.client().forward_ids("work") == []


def test_qrexec_names_the_caller_and_a_qube_not_behind_it_is_refused(
    host: QrexecHost, dom0: RunningService
) -> None:
    host.start_qube("sys-net")  # work is behind sys-firewall, not directly behind sys-net

    with pytest.raises(NatRefused) as refused:
        QrexecNat(host.client_vm("sys-net"), timeout=30).request(_line())

    assert refused.value.refusal is Refusal.DENIED
    assert refused.value.message == f"{WORK} is not a qube behind sys-net"
    assert dom0.client().forward_ids("work") == []


def test_dom0s_policy_refuses_what_our_file_does_not_allow(
    host: QrexecHost, dom0: RunningService
) -> None:
    host.start_qube("sys-firewall")
    argv = [*host.client_vm("sys-firewall"), "@adminvm", "qubes.PortfwdNat+Grant"]

    done = subprocess.run(argv, input=_line().encode(), capture_output=True, timeout=30)

    assert done.returncode == EXIT_REFUSED and done.stdout == b""
    assert dom0.client().forward_ids("work") == []
