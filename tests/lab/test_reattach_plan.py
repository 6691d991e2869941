"""The re-attach plan (pure): only the moved qube's uplink changes, both netvms' anti-spoofing
sets are refilled, its gateway keys follow the new netvm."""

import pytest

from qubes_lab.outside import outside_addresses
from qubes_lab.reattach import plan_reattach
from qubes_lab.topology_file import load_lab_spec
from qubes_portfwd.model.errors import ValidationError

SPEC = load_lab_spec(None)
A = outside_addresses(SPEC)
WORK4 = str(SPEC.topology["work"].address4)


def scripts(plan: object) -> dict[str, str]:
    return dict(plan.antispoof)  # type: ignore[attr-defined]


def test_moving_work_behind_sys_vpn() -> None:
    plan, spec = plan_reattach("t", SPEC, "work", "sys-vpn", A)
    assert plan.detach and plan.veth is not None
    assert (plan.veth.netns_a, plan.veth.name_a) == ("qlab-t-work", "eth0")
    assert (plan.veth.netns_b, plan.veth.name_b) == ("qlab-t-sys-vpn", "vif6.0")
    qube_side, netvm_side = plan.setups
    gateway = str(SPEC.topology["sys-vpn"].address4)
    assert f"route add default via {gateway} dev eth0 onlink" in qube_side.commands
    # sys-vpn has no IPv6: neither has work's new uplink.
    assert qube_side.sysctls["net/ipv6/conf/eth0/disable_ipv6"] == "1"
    assert netvm_side.netns == "qlab-t-sys-vpn"
    assert f"route add {WORK4}/32 dev vif6.0 metric 32746" in netvm_side.commands
    old, new = scripts(plan)["qlab-t-sys-firewall"], scripts(plan)["qlab-t-sys-vpn"]
    assert WORK4 not in old and '"vif7.0" . ' in old
    assert f'"vif6.0" . {WORK4}' in new
    assert plan.static["/qubes-gateway"] == gateway and "/qubes-ip6" not in plan.static
    assert spec.topology["work"].netvm == "sys-vpn"
    # Its IPv6 base tables become what a restart behind sys-vpn loads: Qubes' IPv6 drop.
    assert "delete table ip6 qubes" in plan.own_ipv6_rules
    assert "table ip6 qbs-filter {" in plan.own_ipv6_rules
    assert "table ip " not in plan.own_ipv6_rules
    assert [q.name for q in spec.topology.downstream("sys-firewall")] == ["personal", "sys-vpn"]


def test_no_netvm_only_detaches() -> None:
    plan, spec = plan_reattach("t", SPEC, "work", None, A)
    assert plan.detach and plan.veth is None and plan.setups == ()
    assert list(scripts(plan)) == ["qlab-t-sys-firewall"]
    assert "/qubes-gateway" not in plan.static and plan.static["/name"] == "work"
    assert spec.topology["work"].netvm is None


def test_ipv6_base_tables_come_back_with_an_ipv6_uplink() -> None:
    _, behind_vpn = plan_reattach("t", SPEC, "work", "sys-vpn", A)
    plan, _ = plan_reattach("t", behind_vpn, "work", "sys-firewall", A)
    assert plan.own_ipv6_rules.count("table ip6 qubes {") == 1
    assert "table ip6 qbs-filter {" not in plan.own_ipv6_rules
    same_family, _ = plan_reattach("t", SPEC, "personal", "sys-net", A)
    assert same_family.own_ipv6_rules == ""


def test_the_same_netvm_changes_nothing() -> None:
    plan, spec = plan_reattach("t", SPEC, "work", "sys-firewall", A)
    assert not plan.changes_anything and spec is SPEC


def test_a_tunnel_qube_moves_its_uplink_and_keeps_its_default_route() -> None:
    plan, _ = plan_reattach("t", SPEC, "sys-vpn", "sys-net", A)
    qube_side, _ = plan.setups
    gateway = SPEC.topology["sys-net"].address4
    assert not any(c.startswith("route add default") for c in qube_side.commands)
    assert f"route add {A.provider_public4}/32 via {gateway} dev eth0 onlink" in qube_side.commands
    assert set(scripts(plan)) == {"qlab-t-sys-firewall", "qlab-t-sys-net"}


@pytest.mark.parametrize(
    ("qube", "netvm", "field"),
    [("sys-net", "sys-firewall", "netvm"), ("work", "personal", "netvm")],
)
def test_refused(qube: str, netvm: str, field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        plan_reattach("t", SPEC, qube, netvm, A)
    assert raised.value.field == field
