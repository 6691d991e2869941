"""The provider-mode responder's table (pure): it picks ports, caps leases, rotates, deletes."""

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from qubes_lab.provider_leases import (
    ClientPort,
    Grant,
    ProviderTable,
    dnat_ruleset,
    handle_mapping,
    rotated,
)
from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.natpmp import wire

CLIENT = ipaddress.IPv4Address("100.64.0.2")
OTHER = ipaddress.IPv4Address("100.64.0.3")
PORTS = PortRange(40000, 40009)
EMPTY = ProviderTable({}, PORTS, lease=60)


def lowest_free(ports: PortRange, in_use: frozenset[int]) -> int | None:
    return next((p for p in range(ports.first, ports.last + 1) if p not in in_use), None)


def ask(
    table: ProviderTable,
    request: wire.MappingRequest,
    now: float = 0.0,
    client: ipaddress.IPv4Address = CLIENT,
) -> tuple[ProviderTable, wire.Response]:
    return handle_mapping(table, client, request, now, int(now), lowest_free)


def test_the_provider_picks_the_port_and_caps_the_lease() -> None:
    table, answer = ask(EMPTY, wire.MappingRequest("tcp", 8080, 8080, 7200))
    assert answer == wire.MappingResponse("tcp", 0, 8080, 40000, 60)
    assert table.grants == {ClientPort(CLIENT, "tcp", 8080): Grant(40000, 60.0)}


def test_renewal_keeps_the_port_and_extends_the_lease() -> None:
    table, _ = ask(EMPTY, wire.MappingRequest("tcp", 8080, 0, 60))
    table, answer = ask(table, wire.MappingRequest("tcp", 8080, 40005, 60), now=30.0)
    assert isinstance(answer, wire.MappingResponse) and answer.external_port == 40000
    assert table.grants[ClientPort(CLIENT, "tcp", 8080)].expires_at == 90.0


def test_an_expired_lease_is_gone_and_its_port_free() -> None:
    table, _ = ask(EMPTY, wire.MappingRequest("tcp", 8080, 0, 60))
    assert table.expired(61.0).grants == {}


def test_delete_one_and_delete_all_touch_only_the_asking_client() -> None:
    table = EMPTY
    for client, port in ((CLIENT, 80), (CLIENT, 81), (OTHER, 80)):
        table, _ = ask(table, wire.MappingRequest("udp", port, 0, 60), client=client)
    one, answer = ask(table, wire.MappingRequest("udp", 80, 0, 0))
    assert answer == wire.MappingResponse("udp", 0, 80, 0, 0)
    assert ClientPort(CLIENT, "udp", 80) not in one.grants and len(one.grants) == 2
    everything, _ = ask(table, wire.MappingRequest("udp", 0, 0, 0))
    assert list(everything.grants) == [ClientPort(OTHER, "udp", 80)]


def test_out_of_ports_is_out_of_resources() -> None:
    table = EMPTY
    for port in range(10):
        table, _ = ask(table, wire.MappingRequest("tcp", 1000 + port, 0, 60))
    _, answer = ask(table, wire.MappingRequest("tcp", 2000, 0, 60))
    assert answer == wire.ErrorResponse(2, wire.ResultCode.OUT_OF_RESOURCES, 0)


@given(st.lists(st.integers(1, 65535), min_size=1, max_size=5, unique=True))
def test_rotation_moves_every_mapping_to_a_new_unique_port(internal_ports: list[int]) -> None:
    table = EMPTY
    for port in internal_ports:
        table, _ = ask(table, wire.MappingRequest("tcp", port, 0, 60))
    moved = rotated(table, 1.0, lowest_free)
    assert moved.grants.keys() == table.grants.keys()
    for key, grant in moved.grants.items():
        assert grant.public_port != table.grants[key].public_port
        assert grant.expires_at == table.grants[key].expires_at
    new_ports = [g.public_port for g in moved.grants.values()]
    assert len(set(new_ports)) == len(new_ports)


def test_dnat_ruleset_maps_public_ports_to_clients_in_one_transaction() -> None:
    grants = {
        ClientPort(CLIENT, "tcp", 8080): Grant(40001, 60.0),
        ClientPort(CLIENT, "udp", 53): Grant(40002, 60.0),
    }
    script = dnat_ruleset(
        "qlab-provider-natpmp", "eth0", ipaddress.IPv4Address("203.0.113.2"), grants
    )
    assert script.startswith(
        "table ip qlab-provider-natpmp {}\ndelete table ip qlab-provider-natpmp\n"
    )
    assert "elements = { 40001 : 100.64.0.2 . 8080 }" in script
    assert "elements = { 40002 : 100.64.0.2 . 53 }" in script
    assert 'iifname "eth0" ip daddr 203.0.113.2 dnat ip to tcp dport map @tcp_ports' in script
    empty = dnat_ruleset("t", "eth0", ipaddress.IPv4Address("203.0.113.2"), {})
    assert "elements" not in empty
