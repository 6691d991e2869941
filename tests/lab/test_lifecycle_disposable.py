"""A disposable network qube replaced: dom0 gives the new disposable a new dispid (set here
with `qvm-prefs NETVM dispid N`), the lab restarts the qube on its new 10.138.x.y address,
and the forward through it comes back by itself."""

import pytest
from test_lifecycle_support import COME_BACK_TIMEOUT, Env, poll, web_server

from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

LAB_TOPOLOGY = """
[qubes.sys-net]
qid = 2
provides_network = true

[qubes.disp-fw]
qid = 3
class = "DispVM"
dispid = 100
netvm = "sys-net"
provides_network = true

[qubes.work]
qid = 6
netvm = "disp-fw"
"""


@pytest.fixture(scope="module")
def env(private_lab: Lab) -> Env:
    return Env(private_lab)  # the host of LAB_TOPOLOGY


def reached(env: Env) -> bool:
    a = env.lab.addresses
    url, source = f"http://{a.edge_lan4}:80/", str(a.lan_clients4[0])
    with web_server(env.lab, "work") as page:
        found = poll(lambda: page in (env.fetch("lan", url, source) or ""), COME_BACK_TIMEOUT)
        return found is not None


def test_a_replaced_disposable_netvm_carries_the_forward_on_its_new_address(env: Env) -> None:
    lab = env.lab
    assert str(lab.topology["disp-fw"].address4) == "10.138.0.100"
    forward = env.cli(
        "qvm_portfwd", "add", "work", "tcp", "80:8080", "--external", "--from", "any"
    ).strip()
    assert reached(env)

    env.cli("qvm_prefs", "disp-fw", "dispid", "301")
    lab.restart_qube("disp-fw")

    assert str(lab.topology["disp-fw"].address4) == "10.138.1.45"
    assert reached(env)
    edge_entries = lab.store("sys-net").read()[1]
    (hop,) = [v for k, v in edge_entries.items() if k.startswith(f"/qubes-portfwd/{forward}/")]
    assert "to=10.138.1.45" in hop
    assert poll(lambda: env.all_hops_applied(forward), COME_BACK_TIMEOUT) is not None


def test_only_a_disposable_has_a_dispid(env: Env) -> None:
    with pytest.raises(AssertionError, match="dispid"):
        env.cli("qvm_prefs", "work", "dispid", "7")
