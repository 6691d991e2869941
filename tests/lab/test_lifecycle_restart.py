"""Qube and IP changes: a qube on the path restarted (namespace destroyed and made again),
possibly with a new IP set through the admin service, or with IPv6 switched: its forwards
come back by themselves on the new addresses."""

from collections.abc import Iterator

import pytest
from test_lifecycle_support import COME_BACK_TIMEOUT, Env, poll, web_server

from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(private_lab: Lab) -> Env:
    return Env(private_lab)


@pytest.fixture
def forward(env: Env) -> Iterator[str]:
    """An external forward to work:8080 for IPv4 clients (yielded), and one for IPv6."""
    add = ("qvm_portfwd", "add", "work", "tcp", "80:8080", "--external", "--from")
    forward = env.cli(*add, "any").strip()
    env.cli(*add, "::/0")
    yield forward
    for shown in env.client.forwards_of("work"):
        env.client.remove_forward("work", shown.id)


def reached(env: Env, family: int = 4) -> bool:
    """Whether a LAN client gets work's page through the forward (its own server each time:
    a restart of work ends every process inside it)."""
    a = env.lab.addresses
    if family == 4:
        url, source = f"http://{a.edge_lan4}:80/", str(a.lan_clients4[0])
    else:
        url, source = f"http://[{a.edge_lan6}]:80/", str(a.lan_clients6[0])
    with web_server(env.lab, "work") as page:
        return (
            poll(lambda: page in (env.fetch("lan", url, source) or ""), COME_BACK_TIMEOUT)
            is not None
        )


def refused(env: Env, family: int) -> bool:
    a = env.lab.addresses
    url = f"http://{a.edge_lan4}:80/" if family == 4 else f"http://[{a.edge_lan6}]:80/"
    source = str(a.lan_clients4[0] if family == 4 else a.lan_clients6[0])
    with web_server(env.lab, "work"):
        return env.fetch("lan", url, source) is None


@pytest.mark.parametrize(
    ("qube", "new_ip"),
    [("work", "10.137.0.66"), ("sys-firewall", "10.137.0.33"), ("sys-net", "10.137.0.22")],
)
def test_a_qube_on_the_path_restarted_with_a_new_ip_carries_its_forward_again(
    env: Env, forward: str, qube: str, new_ip: str
) -> None:
    assert reached(env)
    env.cli("qvm_prefs", qube, "ip", new_ip)
    env.lab.restart_qube(qube)
    assert str(env.lab.topology[qube].address4) == new_ip
    address = env.lab.run(qube, ["ip", "-4", "-br", "addr"], capture_output=True)
    assert new_ip in address.stdout.decode()
    assert reached(env)
    assert poll(lambda: env.all_hops_applied(forward), COME_BACK_TIMEOUT) is not None
    env.client.reset_property(qube, "ip")
    env.lab.restart_qube(qube)
    assert reached(env)


def test_a_plain_restart_brings_the_forward_back(env: Env, forward: str) -> None:
    for qube in ("sys-firewall", "work"):
        env.lab.restart_qube(qube)
        assert reached(env)
    assert reached(env, family=6)


def test_ipv6_switched_off_and_on_for_the_target(env: Env, forward: str) -> None:
    assert reached(env, family=6)
    env.client.set_feature("work", "ipv6", "")
    env.lab.restart_qube("work")
    assert env.lab.topology["work"].address6 is None
    assert reached(env, family=4)
    assert refused(env, family=6)
    env.client.set_feature("work", "ipv6", "1")
    env.lab.restart_qube("work")
    assert reached(env, family=6)
    assert reached(env, family=4)
