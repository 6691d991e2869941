"""A network qube's socket (its qrexec channel in the lab): only its NAT calls, about itself.

The service runs in a thread of this process, so these need no root.
"""

from collections.abc import Iterator

import pytest

from admin_service import RunningService, exchange, make_service, small_topology
from qubes_lab.qubesd.access import QUBE_METHODS, qube_socket_path
from qubes_portfwd.client import AdminClient

NETWORK_QUBES = ("sys-net", "sys-firewall", "other-net")
WORK = small_topology()["work"].address4  # behind sys-firewall
OTHER = small_topology()["personal"].address4  # behind sys-firewall too


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    service = make_service(tmp_path_factory.mktemp("perm"), agent_timeout=0.05)
    service.start(qube_sockets=NETWORK_QUBES)
    try:
        yield service
    finally:
        service.stop()


def call(running: RunningService, qube: str, header: str, payload: str = "") -> bytes:
    path = qube_socket_path(running.socket_path, qube)
    return exchange(path, header.encode() + b"\0" + payload.encode())


def nat_request(client: object, wait: int = 0) -> str:
    return (
        f"client={client} proto=tcp internal-port=8080 external-port=8080 lifetime=60 "
        f"origin=NAT-PMP wait={wait}"
    )


def refused(reply: bytes, word: str) -> bool:
    return reply.startswith(b"2\0PermissionDenied\0") and word.encode() in reply


def test_each_network_qube_has_its_own_private_socket(running: RunningService) -> None:
    for qube in NETWORK_QUBES:
        path = qube_socket_path(running.socket_path, qube)
        assert path.is_socket() and path.stat().st_mode & 0o777 == 0o600
    assert not qube_socket_path(running.socket_path, "work").exists()


def test_the_qube_socket_lets_its_own_nat_calls_in(running: RunningService) -> None:
    address = call(
        running,
        "sys-firewall",
        f"admin.vm.portfwd.NatAddress+{WORK} sys-firewall name sys-firewall",
    )
    assert address == b"0\x000.0.0.0\n"
    # No policy for work: the user is asked, and wait=0 answers at once that it is pending.
    reply = call(
        running,
        "sys-firewall",
        "admin.vm.portfwd.NatRequest+ sys-firewall name sys-firewall",
        nat_request(WORK),
    )
    assert reply.startswith(b"0\0result=pending id=")


@pytest.mark.parametrize(
    "header",
    [
        "admin.vm.firewall.Set+ sys-firewall name work",
        "admin.vm.firewall.Get+ sys-firewall name work",
        "admin.vm.List+ sys-firewall name dom0",
        "admin.vm.portfwd.Add+ sys-firewall name work",
        "admin.portfwd.Approve+abc sys-firewall name dom0",
        "admin.vm.portfwd.NatPolicy.Set+ sys-firewall name work",
        "admin.vm.property.Set+netvm sys-firewall name work",
        "admin.vm.feature.Set+portfwd-public-address sys-firewall name sys-net",
    ],
)
def test_the_qube_socket_refuses_dom0_methods(running: RunningService, header: str) -> None:
    reply = call(running, "sys-firewall", header, "action=accept")
    assert refused(reply, "method: a qube may call only")
    assert set(QUBE_METHODS) == {"admin.vm.portfwd.NatRequest", "admin.vm.portfwd.NatAddress"}


@pytest.mark.parametrize("source", ["dom0", "sys-net", "work", "other-net"])
def test_the_qube_socket_refuses_another_source(running: RunningService, source: str) -> None:
    header = f"admin.vm.portfwd.NatRequest+ {source} name sys-firewall"
    assert refused(call(running, "sys-firewall", header, nat_request(WORK)), "source")


def test_a_qube_cannot_ask_in_another_qubes_name(running: RunningService) -> None:
    # sys-net claiming to be sys-firewall (the netvm of work) as the destination.
    header = "admin.vm.portfwd.NatRequest+ sys-net name sys-firewall"
    assert refused(call(running, "sys-net", header, nat_request(WORK)), "dest")
    header = f"admin.vm.portfwd.NatAddress+{WORK} sys-net name sys-firewall"
    assert refused(call(running, "sys-net", header), "dest")


def test_nat_methods_accept_only_the_asking_qubes_own_clients(running: RunningService) -> None:
    # work is behind sys-firewall, not directly behind sys-net or other-net.
    for netvm in ("sys-net", "other-net"):
        header = f"admin.vm.portfwd.NatRequest+ {netvm} name {netvm}"
        reply = call(running, netvm, header, nat_request(WORK))
        assert refused(reply, "is not a qube behind"), reply
        header = f"admin.vm.portfwd.NatAddress+{WORK} {netvm} name {netvm}"
        assert refused(call(running, netvm, header), "is not a qube behind")
    # sys-firewall's own address is not one of its clients either.
    own = small_topology()["sys-firewall"].address4
    header = "admin.vm.portfwd.NatRequest+ sys-firewall name sys-firewall"
    assert refused(call(running, "sys-firewall", header, nat_request(own)), "is not a qube")
    reply = call(running, "sys-firewall", header, nat_request(OTHER))
    assert reply.startswith(b"0\0result=pending")


def test_nothing_was_granted_to_a_refused_caller(running: RunningService) -> None:
    client = AdminClient(running.socket_path)
    for qube in ("work", "personal"):
        assert client.forward_ids(qube) == []


def test_dom0s_socket_still_takes_every_method(running: RunningService) -> None:
    client = AdminClient(running.socket_path)
    assert "sys-firewall" in {q.name for q in client.list_qubes()}
    assert client.nat_address("sys-firewall", str(WORK)) == "0.0.0.0"
