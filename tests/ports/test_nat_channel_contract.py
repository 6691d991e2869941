"""Contract of the NAT channel port (a network qube asks dom0), run against every adapter.

The lab's adapter: the qubesd protocol on the qube's own qrexec stand-in socket, served by
the lab's qubesd hosting the real controller. The stock host's adapter: `qrexec-client-vm`
(here a stand-in doing what qrexec does, tests/qrexec/qrexec_stand_in.py) to our dom0
service `qubes.PortfwdNat`, served on the same controller's loop.
"""

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_service import RunningService, make_service
from qubes_lab.qubesd.access import qube_socket_path
from qubes_portfwd.adapters.qrexec_nat import QrexecNat
from qubes_portfwd.adapters.qubesd_socket_nat import QubesdSocketNat
from qubes_portfwd.client import AdminClient
from qubes_portfwd.ports.nat_channel import NatChannel, NatRefused, Refusal
from qubes_portfwd.qrexec.nat_service import serve_nat_requests

WORK = "10.137.0.6"
QREXEC_STAND_IN = Path(__file__).parent.parent / "qrexec" / "qrexec_stand_in.py"


def _line(client: str = WORK, internal: int = 8080, lifetime: int = 600) -> str:
    return (
        f"client={client} proto=tcp internal-port={internal} external-port={internal + 10000} "
        f"lifetime={lifetime} origin=NAT-PMP wait=0"
    )


@pytest.fixture
def nat_service(tmp_path: Path) -> Iterator[RunningService]:
    running = make_service(tmp_path, agent_timeout=0.05)
    running.start(qube_sockets=("sys-firewall", "sys-net"))
    try:
        runner = running._runner
        assert runner is not None
        serving = serve_nat_requests(runner.service, _nat_socket(running), group=None)
        asyncio.run_coroutine_threadsafe(serving, runner.loop).result(timeout=10)
        running.client().nat_policy_set("work", ["ports=1024-65535 action=allow"])
        yield running
    finally:
        running.stop()


def lab_channel(service: RunningService, qube: str, as_qube: str | None = None) -> NatChannel:
    """`qube`'s channel; `as_qube` names another caller on that socket (a forgery)."""
    socket_path = qube_socket_path(service.socket_path, qube)
    caller = as_qube or qube
    return QubesdSocketNat(AdminClient(socket_path, timeout=10, source=caller), caller)


def _nat_socket(service: RunningService) -> Path:
    return service.tmp / "nat.sock"


def qrexec_channel(service: RunningService, qube: str, as_qube: str | None = None) -> NatChannel:
    """`qube`'s channel; with `as_qube`, qrexec itself names another caller (a forgery)."""
    stand_in = (sys.executable, str(QREXEC_STAND_IN), "--socket", str(_nat_socket(service)))
    return QrexecNat((*stand_in, "--source", as_qube or qube), timeout=30)


ADAPTERS = {"lab": lab_channel, "qrexec": qrexec_channel}


@pytest.fixture(params=sorted(ADAPTERS))
def channel_for(request: pytest.FixtureRequest, nat_service: RunningService):
    return lambda qube, as_qube=None: ADAPTERS[request.param](nat_service, qube, as_qube)


def test_an_allowed_request_is_granted_and_removed(channel_for) -> None:
    channel = channel_for("sys-firewall")

    granted = channel.request(_line())
    removed = channel.request(_line(lifetime=0))

    assert granted["result"] == "granted" and int(granted["port"]) > 0
    assert removed["result"] == "removed" and removed["count"] == "1"


def test_a_client_not_behind_the_asking_qube_is_denied(channel_for) -> None:
    with pytest.raises(NatRefused) as refused:
        channel_for("sys-net").request(_line())
    assert refused.value.refusal is Refusal.DENIED


def test_a_qube_cannot_ask_as_another(channel_for) -> None:
    with pytest.raises(NatRefused) as refused:
        channel_for("sys-firewall", as_qube="sys-net").request(_line())
    assert refused.value.refusal is Refusal.DENIED


def test_a_malformed_request_is_refused_naming_the_field(channel_for) -> None:
    with pytest.raises(NatRefused) as refused:
        channel_for("sys-firewall").request("client=10.137.0.6 proto=sctp internal-port=80")
    assert refused.value.refusal is Refusal.FAILED and "proto" in refused.value.message


def test_the_outside_address_of_a_client_is_answered(channel_for) -> None:
    assert channel_for("sys-firewall").address(WORK)


def _unreachable_lab(tmp_path: Path) -> NatChannel:
    return QubesdSocketNat(AdminClient(tmp_path / "none.sock", timeout=2), "sys-firewall")


def _unreachable_qrexec(tmp_path: Path) -> NatChannel:
    stand_in = (sys.executable, str(QREXEC_STAND_IN), "--socket", str(tmp_path / "none.sock"))
    return QrexecNat((*stand_in, "--source", "sys-firewall"), timeout=30)


@pytest.mark.parametrize(
    "unreachable", [_unreachable_lab, _unreachable_qrexec], ids=["lab", "qrexec"]
)
def test_no_dom0_is_a_failure_not_a_hang(tmp_path: Path, unreachable) -> None:
    channel = unreachable(tmp_path)
    with pytest.raises(NatRefused) as refused:
        channel.request(_line())
    assert refused.value.refusal is Refusal.FAILED
