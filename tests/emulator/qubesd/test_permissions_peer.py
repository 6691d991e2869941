"""dom0's socket: root and the admin group only, checked by the file mode and by SO_PEERCRED.

Clients run as another uid through `setpriv` (needs root), with the system Python and no
import of ours, so they see only what any process on the host sees.
"""

import grp
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_service import RunningService, make_service
from qubes_lab import admin_launcher as launcher
from qubes_lab.qubesd.access import qube_socket_path

pytestmark = pytest.mark.lab

NOBODY = 65534
ADMIN_GROUP = "users"  # any group the host has; the service is told to take it as admins
CLIENT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except OSError as err:
    print(f"connect: {err.strerror}")
    raise SystemExit(0)
sock.sendall(sys.argv[2].encode() + b"\\0" + "".join(sys.argv[3:]).encode())
sock.shutdown(socket.SHUT_WR)
data = b""
while chunk := sock.recv(65536):
    data += chunk
print(repr(data))
"""


@pytest.fixture(scope="module")
def running() -> Iterator[RunningService]:
    # Not under pytest's tmp dirs: those are 0700 and another uid could not reach the socket.
    top = Path(tempfile.mkdtemp(prefix="qpt-perm-"))
    top.chmod(0o755)
    service_files = make_service(top, agent_timeout=0.05)
    service_files.process = launcher.start(
        service_files.socket_path,
        service_files.state_dir,
        topology_file=top / "topology.json",
        qubesdb_dir=service_files.qubesdb_dir,
        boot_id_file=service_files.boot_id_file,
        agent_timeout=0.05,
        admin_group=ADMIN_GROUP,
        log_path=top / "admind.log",
    )
    try:
        yield service_files
    finally:
        service_files.stop()
        subprocess.run(["rm", "-rf", "--one-file-system", str(top)], check=False, timeout=30)


def call_as(path: Path, request: str, *ids: str, payload: str = "") -> str:
    argv = ["setpriv", *ids, "--", "/usr/bin/python3", "-I", "-c", CLIENT, str(path), request]
    argv += [payload] if payload else []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


LIST = "admin.vm.List+ dom0 name dom0"
SET = "admin.vm.firewall.Set+ dom0 name work"
RULE = "action=accept dst4=192.0.2.1/32\n"
NOBODY_IDS = (f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


def test_socket_is_root_and_admin_group_only(running: RunningService) -> None:
    info = running.socket_path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (0, grp.getgrnam(ADMIN_GROUP).gr_gid)


def test_an_outsider_cannot_even_connect(running: RunningService) -> None:
    assert call_as(running.socket_path, LIST, *NOBODY_IDS) == "connect: Permission denied"
    path = qube_socket_path(running.socket_path, "sys-firewall")
    request = "admin.vm.portfwd.NatAddress+10.137.0.6 sys-firewall name sys-firewall"
    assert call_as(path, request, *NOBODY_IDS) == "connect: Permission denied"


def test_the_service_refuses_an_outsider_even_on_a_loosened_socket(
    running: RunningService,
) -> None:
    # Someone chmods the socket wide open: the peer's credentials still keep the outsider out.
    running.socket_path.chmod(0o666)
    try:
        reply = call_as(running.socket_path, LIST, *NOBODY_IDS)
        as_member = call_as(running.socket_path, LIST, *NOBODY_IDS[:2], f"--groups={ADMIN_GROUP}")
    finally:
        running.socket_path.chmod(0o660)
    assert reply.startswith("b'2\\x00PermissionDenied\\x00")
    assert f"uid {NOBODY} is not root" in reply
    assert as_member.startswith("b'0\\x00dom0 class=AdminVM")


@pytest.mark.parametrize(
    "ids",
    [
        (f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={ADMIN_GROUP}"),
        (f"--reuid={NOBODY}", f"--regid={ADMIN_GROUP}", "--clear-groups"),
        ("--reuid=0", "--regid=0", "--clear-groups"),
    ],
    ids=["supplementary-group", "primary-group", "root"],
)
def test_root_and_admin_group_members_are_let_in(
    running: RunningService, ids: tuple[str, ...]
) -> None:
    assert call_as(running.socket_path, LIST, *ids).startswith("b'0\\x00dom0 class=AdminVM")


def test_a_refused_caller_changed_nothing(running: RunningService) -> None:
    running.socket_path.chmod(0o666)
    try:
        reply = call_as(running.socket_path, SET, *NOBODY_IDS, payload=RULE)
    finally:
        running.socket_path.chmod(0o660)
    assert "PermissionDenied" in reply
    assert not running.firewall_xml("work").exists()
    assert call_as(running.socket_path, SET, "--reuid=0", payload=RULE) == "b'0\\x00'"
    assert "192.0.2.1" in running.firewall_xml("work").read_text()
