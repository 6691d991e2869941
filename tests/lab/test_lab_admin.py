"""The admin service driving a whole lab through its socket: real agents, real packets."""

import os
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient, ForwardState, ForwardStatus, HopState

pytestmark = pytest.mark.lab

WEB = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=192.0.2.0/24"
)


class LabWithService:
    """The lab and the admin service `Lab.up` started for it."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def start(self) -> None:
        self.lab.start_admin()

    def stop(self) -> None:
        self.lab.stop_admin()

    def client(self) -> AdminClient:
        return AdminClient(self.lab.admin_socket, timeout=60)


@pytest.fixture(scope="module")
def setup(private_lab: Lab) -> LabWithService:
    """A lab of the module's own: its tests restart the service, change work's netvm and
    delete Qubes' tables."""
    return LabWithService(private_lab)


@pytest.fixture
def web_server(setup: LabWithService) -> Iterator[None]:
    process = setup.lab.popen(
        "work", [sys.executable, "-m", "http.server", "8080"], cwd="/tmp",
        stdout=open(os.devnull, "wb"), stderr=open(os.devnull, "wb"),  # noqa: SIM115
    )  # fmt: skip
    try:
        wait_for(lambda: curl(setup, "work", "127.0.0.1:8080"), "web server in work")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def no_rules_after(setup: LabWithService) -> Iterator[None]:
    yield
    for qube in ("work", "personal"):
        client = setup.client()
        client.firewall_set(qube, ["action=accept"])
        for forward_id in client.forward_ids(qube):
            client.remove_forward(qube, forward_id)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s"
        time.sleep(0.1)


def curl(setup: LabWithService, host: str, address: str) -> bool:
    result = setup.lab.run(
        host, ["curl", "-s", "-o", "/dev/null", "--max-time", "3", f"http://{address}/"],
        capture_output=True,
    )  # fmt: skip
    return result.returncode == 0


def edge_address(setup: LabWithService) -> str:
    return f"{setup.lab.addresses.edge_lan4}:80"


def the_forward(setup: LabWithService) -> ForwardStatus:
    [forward] = setup.client().forwards()
    return forward


def all_applied(setup: LabWithService) -> bool:
    forward = the_forward(setup)
    return forward.state == ForwardState.ACTIVE and all(
        h.state == HopState.APPLIED for h in forward.hops
    )


def test_forward_through_the_socket_works_end_to_end(
    setup: LabWithService, web_server: None
) -> None:
    client = setup.client()
    assert not curl(setup, "lan", edge_address(setup))
    forward_id = client.add_forward("work", WEB)
    wait_for(lambda: all_applied(setup), "every hop applied")
    assert [h.qube for h in the_forward(setup).hops] == ["sys-net", "sys-firewall", "work"]
    assert curl(setup, "lan", edge_address(setup))
    assert [f.id for f in client.forwards_through("sys-net")] == [forward_id]
    client.remove_forward("work", forward_id)
    assert client.forwards() == []
    assert not curl(setup, "lan", edge_address(setup))


def test_restart_keeps_every_forward(setup: LabWithService, web_server: None) -> None:
    client = setup.client()
    client.add_forward("work", WEB)
    wait_for(lambda: all_applied(setup), "every hop applied")
    before = client.forwards()
    setup.stop()
    setup.start()
    assert setup.client().forwards() == before
    assert curl(setup, "lan", edge_address(setup))


def test_netvm_change_deactivates_and_rebind_restores(
    setup: LabWithService, web_server: None
) -> None:
    client = setup.client()
    forward_id = client.add_forward("work", WEB)
    wait_for(lambda: all_applied(setup), "every hop applied")
    client.set_property("work", "netvm", "sys-net")
    forward = the_forward(setup)
    assert forward.state == ForwardState.INACTIVE and "via" in (forward.reason or "")
    assert not any(k.startswith("/qubes-portfwd/") for k in setup.lab.store("sys-net").read()[1])
    client.reset_property("work", "netvm")
    wait_for(lambda: all_applied(setup), "active again on the old path")
    assert client.get_feature("work", f"portfwd.{forward_id}").endswith("via=sys-firewall,sys-net")
    client.remove_forward("work", forward_id)


def test_failed_hop_shows_failed_and_nothing_opens_outside(
    setup: LabWithService, web_server: None
) -> None:
    """Last in the module: it breaks sys-firewall's base rules on purpose."""
    setup.lab.run("sys-firewall", ["nft", "delete", "table", "ip", "qubes"], check=True)
    setup.client().add_forward("work", WEB)
    wait_for(lambda: the_forward(setup).state == ForwardState.FAILED, "the forward failed")
    forward = the_forward(setup)
    states = {h.qube: h.state for h in forward.hops}
    assert states["sys-firewall"] == HopState.FAILED
    assert states["sys-net"] != HopState.APPLIED
    assert forward.hops[1].error
    assert not any(k.startswith("/qubes-portfwd/") for k in setup.lab.store("sys-net").read()[1])
    assert not curl(setup, "lan", edge_address(setup))
