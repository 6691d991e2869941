"""The NAT traversal methods against a real admin service (no root): policy, identity,
pending asks, grants as forwards, renewal, removal, port choice."""

import pytest

from admin_service import RunningService
from qubes_portfwd.client import QubesdError

WORK = "10.137.0.6"
PERSONAL = "10.137.0.7"


def ask(
    client: str = WORK,
    internal: int = 8080,
    external: int = 18080,
    lifetime: int = 600,
    extra: str = "",
) -> str:
    return (
        f"client={client} proto=tcp internal-port={internal} external-port={external} "
        f"lifetime={lifetime} origin=NAT-PMP wait=0 {extra}"
    ).strip()


def nat_rules(service: RunningService, qube: str) -> list[str]:
    """The forwards NAT traversal stored: features `portfwd.<id>` of the qube."""
    client = service.client()
    names = [n for n in client.list_features(qube) if n.startswith("portfwd.")]
    return [client.get_feature(qube, n) for n in names]


def test_policy_round_trip_and_errors(service: RunningService) -> None:
    client = service.client()
    assert client.nat_policy_get("work") == []
    client.nat_policy_set("work", ["ports=80 action=deny", "ports=1024-65535 action=allow"])
    assert client.nat_policy_get("work") == [
        "ports=80 action=deny",
        "ports=1024-65535 action=allow",
    ]
    assert client.get_feature("work", "portfwd-nat-policy") == (
        "ports=80 action=deny; ports=1024-65535 action=allow"
    )
    with pytest.raises(QubesdError, match="action: expected deny, allow or ask"):
        client.nat_policy_set("work", ["ports=80 action=maybe"])
    with pytest.raises(QubesdError, match="max-lifetime"):
        client.nat_policy_set("work", ["ports=80 action=allow max-lifetime=0"])
    assert client.nat_policy_get("work") == [
        "ports=80 action=deny",
        "ports=1024-65535 action=allow",
    ]
    client.nat_policy_set("work", [])
    assert client.nat_policy_get("work") == []
    assert "portfwd-nat-policy" not in client.list_features("work")


def test_allowed_request_becomes_an_expiring_forward(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("work", ["ports=1024-65535 action=allow max-lifetime=300"])
    reply = client.nat_request("sys-firewall", ask(extra="description=my app <3"))
    assert reply["result"] == "granted"
    assert (reply["port"], reply["lifetime"], reply["internal-port"]) == ("18080", "300", "8080")
    [rule] = nat_rules(service, "work")
    assert "srcports=18080-18080 dstports=8080-8080" in rule
    assert "expire=" in rule
    assert rule.endswith("comment=NAT-PMP: my app _3")


def test_renewal_keeps_one_forward_and_lifetime_zero_removes_it(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("work", ["ports=1024-65535 action=allow"])
    first = client.nat_request("sys-firewall", ask(lifetime=100))
    again = client.nat_request("sys-firewall", ask(external=0, lifetime=200))
    assert first["id"] == again["id"] and again["port"] == "18080"
    assert len(nat_rules(service, "work")) == 1
    removed = client.nat_request("sys-firewall", ask(lifetime=0))
    assert removed == {"result": "removed", "count": "1"}
    assert nat_rules(service, "work") == []


def test_deny_and_default_ask(service: RunningService) -> None:
    client = service.client()
    client.nat_policy_set("work", ["ports=18080 action=deny"])
    with pytest.raises(QubesdError, match="denied by policy") as refused:
        client.nat_request("sys-firewall", ask())
    assert refused.value.exc_type == "PermissionDenied"
    pending = client.nat_request("sys-firewall", ask(external=18081))
    assert pending["result"] == "pending"
    assert nat_rules(service, "work") == []
    [entry] = client.nat_pending()
    assert (entry["id"], entry["qube"], entry["port"]) == (pending["id"], "work", "18081")
    # Asked again while waiting: the same entry, not a second one.
    assert client.nat_request("sys-firewall", ask(external=18081))["id"] == pending["id"]
    granted = client.nat_approve(pending["id"])
    assert granted["port"] == "18081"
    assert len(nat_rules(service, "work")) == 1 and client.nat_pending() == []
    with pytest.raises(QubesdError, match="no pending request"):
        client.nat_deny(pending["id"])


def test_user_denial_is_final(service: RunningService) -> None:
    client = service.client()
    pending = client.nat_request("sys-firewall", ask())
    client.nat_deny(pending["id"])
    assert client.nat_pending() == [] and nat_rules(service, "work") == []


@pytest.mark.parametrize(
    ("netvm", "client_address"),
    [("sys-net", WORK), ("sys-firewall", "10.137.0.99"), ("work", WORK)],
)
def test_only_a_qube_behind_the_asking_netvm(
    service: RunningService, netvm: str, client_address: str
) -> None:
    service.client().nat_policy_set("work", ["ports=1-65535 action=allow"])
    with pytest.raises(QubesdError) as refused:
        service.client().nat_request(netvm, ask(client=client_address))
    assert refused.value.exc_type == "PermissionDenied"
    assert nat_rules(service, "work") == []


def test_a_taken_outside_port_moves_unless_exact(service: RunningService) -> None:
    client = service.client()
    for qube in ("work", "personal"):
        client.nat_policy_set(qube, ["ports=1024-65535 action=allow"])
    assert client.nat_request("sys-firewall", ask())["port"] == "18080"
    moved = client.nat_request("sys-firewall", ask(client=PERSONAL))
    assert moved["port"] == "18081"
    with pytest.raises(QubesdError, match="no free outside port"):
        client.nat_request("sys-firewall", ask(client=PERSONAL, internal=9000, extra="exact=1"))


@pytest.mark.parametrize(
    "payload",
    [
        "client=10.137.0.6",
        ask().replace("proto=tcp", "proto=sctp"),
        ask().replace("origin=NAT-PMP", "origin=evil"),
        ask(internal=0),
        ask(lifetime=1 << 40),
        ask() + " client=10.137.0.7",
    ],
)
def test_malformed_requests_name_the_field(service: RunningService, payload: str) -> None:
    with pytest.raises(QubesdError) as refused:
        service.client().nat_request("sys-firewall", payload)
    assert refused.value.exc_type == "QubesValueError"
