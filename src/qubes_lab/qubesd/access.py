"""Who may call what: dom0's socket for root and the admin group, one socket per network qube.

On Qubes, qubesd's socket is `0660 root:qubes` and qrexec tells qubesd which qube called.
Here the kernel says who connected to dom0's socket (SO_PEERCRED), and each network qube
gets its own socket (the lab's stand-in for its qrexec channel): the socket, not the
request, names the caller. A qube may only call the NAT traversal methods, about itself.
"""

from dataclasses import dataclass
from pathlib import Path

from qubes_portfwd.controller.errors import PermissionDenied

from .properties import ADMIN_VM
from .wire import Request

DEFAULT_ADMIN_GROUP = "qubes"
QREXEC_DIR = "qrexec"
# What natd (natd/dom0.py) calls; everything else is dom0's alone.
QUBE_METHODS = frozenset({"admin.vm.portfwd.NatRequest", "admin.vm.portfwd.NatAddress"})


@dataclass(frozen=True)
class Peer:
    """The process on the other end of dom0's socket, as the kernel reports it."""

    pid: int
    uid: int
    groups: frozenset[int]


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the socket says: dom0 (`qube == ADMIN_VM`) or one network qube."""

    qube: str
    refusal: str | None = None


def qube_socket_path(admin_socket: Path, qube: str) -> Path:
    """Where the service listens for `qube` (next to dom0's socket)."""
    return admin_socket.parent / QREXEC_DIR / f"{qube}.sock"


def dom0_caller(peer: Peer, service_uid: int, admin_gid: int | None) -> Caller:
    """Root, the service's own user and members of the admin group act as dom0; nobody else."""
    if peer.uid in (0, service_uid) or (admin_gid is not None and admin_gid in peer.groups):
        return Caller(ADMIN_VM)
    group = "the admin group" if admin_gid is None else f"group {admin_gid}"
    return Caller(ADMIN_VM, f"uid {peer.uid} is not root and not in {group}")


def check_call(caller: Caller, request: Request) -> None:
    """PermissionDenied unless `caller` may make `request`."""
    if caller.refusal is not None:
        raise PermissionDenied(f"caller: {caller.refusal}")
    if caller.qube == ADMIN_VM:
        return
    if request.source != caller.qube:
        raise PermissionDenied(f"source: this socket is {caller.qube}'s; expected {caller.qube}")
    if request.method not in QUBE_METHODS:
        allowed = ", ".join(sorted(QUBE_METHODS))
        raise PermissionDenied(f"method: a qube may call only {allowed}")
    if request.dest != caller.qube:
        raise PermissionDenied(f"dest: a qube may ask only about itself ({caller.qube})")
