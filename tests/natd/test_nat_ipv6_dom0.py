"""Dom0's side of NAT traversal over IPv6, against a real admin service (no root): an IPv6
client's request is decided by the same policy and becomes an IPv6 external forward (one
family per forward), apart from the IPv4 one of the same port; renewal, removal, asks."""

import pytest

from admin_service import RunningService, small_topology
from qubes_portfwd.client import QubesdError

WORK4 = str(small_topology()["work"].address4)
WORK6 = str(small_topology()["work"].address6)
EDGE6 = "2001:db8:0:1::2"


def ask(client: str = WORK6, external: int = 18080, lifetime: int = 600) -> str:
    return (
        f"client={client} proto=tcp internal-port=8080 external-port={external} "
        f"lifetime={lifetime} origin=PCP wait=0"
    )


def nat_rules(service: RunningService, qube: str) -> list[str]:
    client = service.client()
    names = sorted(n for n in client.list_features(qube) if n.startswith("portfwd."))
    return [client.get_feature(qube, n) for n in names]


def test_an_ipv6_grant_is_an_ipv6_forward_beside_the_ipv4_one(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("work", ["ports=1024-65535 action=allow max-lifetime=300"])
    granted6 = client.nat_request("sys-firewall", ask())
    # Nobody said the edge's IPv6 address yet: "none" in IPv6, never the IPv4 one.
    assert (granted6["result"], granted6["address"], granted6["port"]) == ("granted", "::", "18080")
    [rule6] = nat_rules(service, "work")
    assert "srchost=::/0" in rule6 and "comment=PCP" in rule6
    granted4 = client.nat_request("sys-firewall", ask(client=WORK4))
    assert granted4["port"] == "18080" and granted4["id"] != granted6["id"]
    assert sorted("srchost=::/0" in r for r in nat_rules(service, "work")) == [False, True]
    # Renewal in each family keeps one forward each.
    assert client.nat_request("sys-firewall", ask(lifetime=100))["id"] == granted6["id"]
    assert len(nat_rules(service, "work")) == 2
    # Deletion over IPv6 removes the IPv6 forward only.
    assert client.nat_request("sys-firewall", ask(lifetime=0))["count"] == "1"
    [left] = nat_rules(service, "work")
    assert "srchost=0.0.0.0/0" in left


def test_the_edge_public_address_answers_in_its_family(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    client.set_feature("sys-net", "portfwd-public-address", EDGE6)
    assert client.nat_request("sys-firewall", ask())["address"] == EDGE6
    assert client.nat_request("sys-firewall", ask(client=WORK4))["address"] == "0.0.0.0"


def test_ipv6_deny_stores_nothing_and_ask_waits_for_the_user(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("work", ["ports=18080 action=deny"])
    with pytest.raises(QubesdError, match="denied by policy") as refused:
        client.nat_request("sys-firewall", ask())
    assert refused.value.exc_type == "PermissionDenied"
    assert nat_rules(service, "work") == []
    pending = client.nat_request("sys-firewall", ask(external=18081))
    assert pending["result"] == "pending"
    # The IPv4 ask of the same port is another ask, not the IPv6 one asked again.
    pending4 = client.nat_request("sys-firewall", ask(client=WORK4, external=18081))
    assert pending4["id"] != pending["id"]
    entries = {e["id"]: e for e in client.nat_pending()}
    assert entries[pending["id"]]["family"] == "6" and "family" not in entries[pending4["id"]]
    granted = client.nat_approve(pending["id"])
    assert granted["port"] == "18081"
    [rule] = nat_rules(service, "work")
    assert "srchost=::/0" in rule


def test_an_ipv6_address_not_behind_the_netvm_is_refused(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("work", ["ports=1-65535 action=allow"])
    with pytest.raises(QubesdError) as refused:
        client.nat_request("sys-firewall", ask(client="fd09:24ef:4179::a89:99"))
    assert refused.value.exc_type == "PermissionDenied"
    assert nat_rules(service, "work") == []
