"""The rules around natd: SSDP discovery reaches the asking qube, natd's own input rules
survive a base-rule reload, and an agent refuses DNATs to anything but its downstream qubes."""

import time
from collections.abc import Iterator

import pytest
from natd_lab import POLL, UPNP_RE, NatLab, fetch, natd_answers, tcp_server, wait_fetch

from qubes_lab.builder import Lab
from qubes_lab.entry_store import EntryStore

pytestmark = pytest.mark.lab

RECOVER_TIMEOUT = 15.0
HANDLED_TIMEOUT = 15.0


@pytest.fixture
def env(private_lab: Lab) -> Iterator[NatLab]:
    """A lab of the module's own: a test reloads sys-firewall's base rules, another writes
    entries into stores by hand."""
    with NatLab.of(private_lab).cleaned() as nat:
        yield nat


def _lan(env: NatLab) -> tuple[str, str]:
    a = env.lab.addresses
    return str(a.lan_clients4[0]), str(a.edge_lan4)


def _ruleset(lab: Lab, qube: str) -> str:
    return lab.run(qube, ["nft", "list", "ruleset"], capture_output=True, text=True).stdout


def test_upnpc_discovers_natd_by_ssdp_and_maps_a_port(env: NatLab) -> None:
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    lan_client, edge = _lan(env)
    work = str(env.lab.topology["work"].address4)
    with tcp_server(env.lab, "work", 9095, "found-by-ssdp"):
        # No `-u`: upnpc finds the gateway by M-SEARCH to 239.255.255.250:1900. `-i`: the
        # lab's outside address is TEST-NET-1, which miniupnpc counts as "not connected".
        command = ["timeout", "30", "upnpc", "-i", "-e", "discovered", "-a", work, "9095", "19095"]
        done = env.lab.run("work", [*command, "tcp", "600"], capture_output=True, text=True)
        assert f"desc: {env.description_url}" in done.stdout, done.stdout + done.stderr
        found = UPNP_RE.search(done.stdout)
        assert found, done.stdout + done.stderr
        assert (found.group(1), found.group(2)) == (edge, "19095")
        assert wait_fetch(env.lab, "lan", lan_client, edge, 19095) == "found-by-ssdp"
        assert env.nat_forwards("work") == ["UPnP: discovered"]
    gateway = env.gateway
    opened = [line.strip() for line in _ruleset(env.lab, "work").splitlines() if "1900" in line]
    # Exactly the gateway's replies to work's own address, nothing wider.
    assert opened == [f"ct state new ip saddr {gateway} ip daddr {work} udp sport 1900 accept"]
    assert "1900" not in _ruleset(env.lab, "sys-net")  # sys-net's netvm runs no natd


def test_natd_input_rules_come_back_after_a_base_rule_reload(env: NatLab) -> None:
    assert natd_answers(env)
    env.lab.reload_base_rules("sys-firewall")
    deadline = time.monotonic() + RECOVER_TIMEOUT
    while not natd_answers(env):
        assert time.monotonic() < deadline, "natd stayed unreachable after the reload"
        time.sleep(POLL)
    listing = env.lab.run(
        "sys-firewall",
        ["nft", "list", "chain", "ip", "qubes", "custom-input"],
        capture_output=True,
        text=True,
    ).stdout
    assert listing.count("jump natd-input") == 1, listing
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    assert env.natpmpc("work", "-a", "18090", "8090", "tcp", "60").mapped_port == 18090


def _dnat(to: str, port: int, toport: int) -> str:
    return (
        f"role=dnat family=4 proto=tcp in=eth0 ports={port}-{port} to={to} "
        f"toports={toport}-{toport} srchost=0.0.0.0/0"
    )


def test_the_agent_refuses_a_dnat_to_anything_but_its_downstream(env: NatLab) -> None:
    lab = env.lab
    topology = lab.topology
    foreign = {
        "f00000000001": str(lab.addresses.lan_router4),  # the LAN router
        "f00000000002": str(topology["sys-net"].address4),  # the netvm
        "f00000000003": str(topology["vpn-work"].address4),  # behind another network qube
    }
    work = str(topology["work"].address4)
    firewall_store, work_store = lab.store("sys-firewall"), lab.store("work")
    written = {
        f"/qubes-portfwd/{ident}/4": _dnat(to, 18100 + n, 22)
        for n, (ident, to) in enumerate(foreign.items())
    }
    legit_key = "/qubes-portfwd/f0000000000a/4"
    accept_key = "/qubes-portfwd/f0000000000a/4"
    written[legit_key] = _dnat(work, 18110, 8110)
    # Hand-written entries: dom0's service would put its own plan back, so it pauses.
    lab.stop_admin()
    try:
        work_generation = work_store.set(
            accept_key, "role=accept family=4 proto=tcp ports=8110-8110 srchost=0.0.0.0/0"
        )
        work_store.wait_for_handled(work_generation, HANDLED_TIMEOUT)
        generation = firewall_store.set_many(written)
        status = firewall_store.wait_for_handled(generation, HANDLED_TIMEOUT)
        for ident, to in foreign.items():
            reason = status.per_key[f"/qubes-portfwd/{ident}/4"]
            assert reason.startswith(f"not applied: to={to} is not a qube behind this one"), reason
        assert status.per_key[legit_key] == "applied"
        nat = lab.run(
            "sys-firewall",
            ["nft", "list", "table", "ip", "qubes-portfwd"],
            capture_output=True,
            text=True,
        ).stdout
        assert f"dnat to {work}:8110" in nat, nat
        for ident, to in foreign.items():
            assert ident not in nat and to not in nat, nat
        sys_net = str(topology["sys-net"].address4)
        with tcp_server(lab, "work", 8110, "legit-hop"):
            assert wait_fetch(lab, "sys-net", sys_net, env.gateway, 18110) == "legit-hop"
            assert fetch(lab, "sys-net", sys_net, env.gateway, 18100) is None
    finally:
        _delete(firewall_store, written)
        _delete(work_store, [accept_key])
        lab.start_admin()


def _delete(store: EntryStore, keys: object) -> None:
    for key in list(keys):  # type: ignore[call-overload]
        store.delete(key)
