"""Qubes' layout as the lab writes it: checked against Qubes' vif-route-qubes and setup-ip."""

from qubes_lab.layout import qube_setup, qube_veths
from qubes_lab.outside import outside_addresses, outside_veths
from qubes_lab.qubesdb_keys import static_keys
from qubes_lab.topology_file import load_lab_spec

SPEC = load_lab_spec()
TOPO = SPEC.topology


def test_every_namespace_name_carries_the_lab_prefix() -> None:
    veths = qube_veths("x1", TOPO) + outside_veths("x1", SPEC)
    names = {v.netns_a for v in veths} | {v.netns_b for v in veths}
    assert all(name.startswith("qlab-x1-") for name in names)
    assert ("qlab-x1-work", "eth0", "qlab-x1-sys-firewall", "vif6.0") in {
        (v.netns_a, v.name_a, v.netns_b, v.name_b) for v in veths
    }


def test_a_qube_has_a_32_address_and_its_netvm_as_onlink_gateway() -> None:
    setup = qube_setup("x1", TOPO, TOPO["work"])
    assert "addr add 10.137.0.6/32 dev eth0" in setup.commands
    assert "neigh replace 10.137.0.3 lladdr fe:ff:ff:ff:ff:ff dev eth0 nud permanent" in (
        setup.commands
    )
    assert "route add default via 10.137.0.3 dev eth0 onlink" in setup.commands
    assert "addr add fd09:24ef:4179::a89:6/128 dev eth0 nodad" in setup.commands
    assert "route add default via fd09:24ef:4179::a89:3 dev eth0 onlink" in setup.commands
    assert "net/ipv4/ip_forward" not in setup.sysctls
    assert setup.etc_files["resolv.conf"] == "nameserver 10.139.1.1\nnameserver 10.139.1.2\n"


def test_a_netvm_puts_its_own_address_on_each_vif_with_a_host_route() -> None:
    setup = qube_setup("x1", TOPO, TOPO["sys-firewall"])
    for qid in (6, 7, 8):
        assert f"link set vif{qid}.0 group 2 up" in setup.commands
        assert f"addr add 10.137.0.3/32 dev vif{qid}.0" in setup.commands
        assert f"route add 10.137.0.{qid}/32 dev vif{qid}.0 metric {32752 - qid}" in (
            setup.commands
        )
        assert setup.sysctls[f"net/ipv4/conf/vif{qid}.0/proxy_arp"] == "1"
        assert setup.sysctls[f"net/ipv4/conf/vif{qid}.0/send_redirects"] == "0"
    assert "link set eth0 group 1 up" in setup.commands
    assert setup.sysctls["net/ipv4/ip_forward"] == "1"
    # sys-vpn has no IPv6: its vif carries none.
    assert setup.sysctls["net/ipv6/conf/vif8.0/disable_ipv6"] == "1"
    assert "route add fd09:24ef:4179::a89:6/128 dev vif6.0 metric 32746" in setup.commands


def test_outside_addresses_are_in_documentation_ranges() -> None:
    a = outside_addresses(SPEC)
    assert [str(c) for c in a.lan_clients4] == ["192.0.2.10", "192.0.2.11"]
    assert str(a.server4) == "198.51.100.80"
    assert str(a.edge_lan4) == "192.0.2.2"
    assert a.tunnel_address("sys-vpn") != a.provider_tunnel4
    assert a.dns_records()["server.lab.test"] == (a.server4, a.server6)


def test_static_keys_follow_qubesdb() -> None:
    work = static_keys(TOPO, TOPO["work"])
    assert work["/qubes-ip"] == "10.137.0.6"
    assert work["/qubes-gateway"] == "10.137.0.3"
    assert work["/qubes-ip6"] == "fd09:24ef:4179::a89:6"
    assert "/qubes-service/qubes-firewall" not in work
    vpn = static_keys(TOPO, TOPO["sys-vpn"])
    assert vpn["/qubes-service/qubes-firewall"] == "1"
    assert vpn["/qubes-portfwd-uplink"] == "wg0"
    assert "/qubes-ip6" not in vpn
    assert static_keys(TOPO, TOPO["sys-net"])["/qubes-portfwd-uplink"] == "eth0"
