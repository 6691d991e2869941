"""Qubes' address rules and the network path from a qube to its edge."""

import ipaddress
import itertools

import pytest
from hypothesis import given

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import (
    DEFAULT_UPLINK,
    FEATURE_IPV6,
    FEATURE_TUNNEL,
    FEATURE_UPLINK,
    PathError,
    Qube,
    Topology,
    check_qube_name,
)
from strategies import topologies, untimed


@pytest.mark.parametrize(
    ("qube", "address4"),
    [
        (Qube("work", 5), "10.137.0.5"),
        (Qube("work", 255), "10.137.0.255"),
        (Qube("work", 300), "10.137.1.44"),
        (Qube("disp1234", 40, dispid=1234), "10.138.4.210"),
        (Qube("pinned", 5, ip=ipaddress.IPv4Address("10.137.9.9")), "10.137.9.9"),
    ],
)
def test_ipv4_from_qid_or_dispid(qube: Qube, address4: str) -> None:
    assert qube.address4 == ipaddress.IPv4Address(address4)
    assert qube.address(4) == qube.address4


def test_ipv6_only_with_the_feature() -> None:
    assert Qube("work", 5).address6 is None
    assert Qube("work", 5, features={FEATURE_IPV6: "0"}).address6 is None
    assert Qube("work", 5, features={FEATURE_IPV6: ""}).address6 is None
    on = {FEATURE_IPV6: "1"}
    assert Qube("work", 5, features=on).address6 == ipaddress.IPv6Address("fd09:24ef:4179::a89:5")
    assert Qube("work", 300, features=on).address(6) == ipaddress.IPv6Address(
        "fd09:24ef:4179::a89:12c"
    )
    assert Qube("disp", 7, dispid=1234, features=on).address6 == ipaddress.IPv6Address(
        "fd09:24ef:4179::a8a:4d2"
    )
    pinned = ipaddress.IPv6Address("fd09:24ef:4179::beef")
    assert Qube("work", 5, ip6=pinned, features=on).address6 == pinned
    assert Qube("work", 5, ip6=pinned).address6 is None


def test_tunnel_and_uplink_features() -> None:
    plain = Qube("sys-net", 1, provides_network=True)
    vpn = Qube("sys-vpn", 2, provides_network=True, features={FEATURE_TUNNEL: "1"})
    wg = vpn.with_changes(features={FEATURE_TUNNEL: "1", FEATURE_UPLINK: "wg0"})
    assert not plain.is_tunnel and plain.uplink == DEFAULT_UPLINK == "eth0"
    assert vpn.is_tunnel and vpn.uplink == "eth0"
    assert wg.uplink == "wg0"
    assert not Qube("x", 3, features={FEATURE_TUNNEL: "0"}).is_tunnel


def _host(*extra: Qube) -> Topology:
    return Topology.of(
        Qube("sys-net", 1, klass="NetVM", provides_network=True),
        Qube("sys-firewall", 2, netvm="sys-net", provides_network=True),
        Qube("work", 5, netvm="sys-firewall"),
        *extra,
    )


def test_path_up_to_the_netvm_less_edge() -> None:
    host = _host()
    assert host.path("work") == ("sys-firewall", "sys-net")
    assert host.path("sys-firewall") == ("sys-net",)


def test_path_ends_at_a_tunnel_qube() -> None:
    host = _host(
        Qube(
            "sys-vpn",
            10,
            netvm="sys-firewall",
            provides_network=True,
            features={FEATURE_TUNNEL: "1"},
        ),
        Qube("vpn-firewall", 11, netvm="sys-vpn", provides_network=True),
        Qube("secret", 12, netvm="vpn-firewall"),
        Qube("direct", 13, netvm="sys-vpn"),
    )
    assert host.path("secret") == ("vpn-firewall", "sys-vpn")
    assert host.path("direct") == ("sys-vpn",)
    assert host.path("sys-vpn") == ("sys-firewall", "sys-net")


@pytest.mark.parametrize(
    ("extra", "name", "reason"),
    [
        ((Qube("offline", 20),), "offline", "offline has no netvm"),
        ((), "sys-net", "sys-net has no netvm"),
        ((Qube("orphan", 20, netvm="sys-gone"),), "orphan", "netvm sys-gone of orphan does"),
        (
            (Qube("app", 20, netvm="work"),),
            "app",
            "work does not provide network",
        ),
        (
            (
                Qube("loop-a", 20, netvm="loop-b", provides_network=True),
                Qube("loop-b", 21, netvm="loop-a", provides_network=True),
                Qube("caught", 22, netvm="loop-a"),
            ),
            "caught",
            "netvm loop",
        ),
        (
            (Qube("selfish", 20, netvm="selfish", provides_network=True),),
            "selfish",
            "netvm loop through selfish",
        ),
        (
            (
                Qube("ring-a", 20, netvm="ring-b", provides_network=True),
                Qube("ring-b", 21, netvm="ring-a", provides_network=True),
            ),
            "ring-a",
            "netvm loop",
        ),
    ],
)
def test_no_path_gives_the_reason(extra: tuple[Qube, ...], name: str, reason: str) -> None:
    with pytest.raises(PathError, match=reason):
        _host(*extra).path(name)


def test_downstream_in_qid_order_and_replacing_a_qube() -> None:
    host = _host(Qube("zeta", 3, netvm="sys-firewall"), Qube("alpha", 9, netvm="sys-firewall"))
    assert [q.name for q in host.downstream("sys-firewall")] == ["zeta", "work", "alpha"]
    moved = host.replace_qube(host["work"].with_changes(netvm="sys-net"))
    assert moved.path("work") == ("sys-net",)
    assert host.path("work") == ("sys-firewall", "sys-net")  # the original is unchanged
    assert "work" in moved and "nobody" not in moved


def test_values_are_immutable() -> None:
    host = _host()
    with pytest.raises(TypeError):
        host.qubes["new"] = Qube("new", 99)  # type: ignore[index]
    with pytest.raises(TypeError):
        host["work"].features["ipv6"] = "1"  # type: ignore[index]


def test_check_qube_name() -> None:
    assert check_qube_name("target", "work") == "work"
    with pytest.raises(ValidationError) as caught:
        check_qube_name("target", "9lives")
    assert caught.value.field == "target"
    assert "expected a letter" in caught.value.message


@untimed
@given(topologies())
def test_every_path_climbs_network_qubes_to_one_edge(host: Topology) -> None:
    for name, qube in host.qubes.items():
        if qube.netvm is None:
            continue
        path = host.path(name)
        assert path[0] == qube.netvm
        assert len(set(path)) == len(path)
        assert all(host[hop].provides_network for hop in path)
        assert not any(host[hop].is_tunnel for hop in path[:-1])
        edge = host[path[-1]]
        assert edge.is_tunnel or edge.netvm is None
        for inner, outer in itertools.pairwise(path):
            assert host[inner].netvm == outer
