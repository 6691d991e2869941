"""A qube's NAT policy is its feature `portfwd-nat-policy`, checked before it is stored, read
by the controller when it decides; an old `nat-policy.json` is moved into features once."""

import json

import pytest

from admin_service import RunningService, make_service
from qubes_portfwd.client import QubesdError

from .test_nat_methods import ask, nat_rules

POLICY = "portfwd-nat-policy"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("ports=80 action=allow; ports=81 action=maybe", "action: expected deny, allow or ask"),
        ("ports=80 action=allow max-lifetime=0", "max-lifetime: expected seconds"),
        ("ports=80 action=allow colour=red", "policy: expected ports=N[-M]"),
        ("ports=0-99999 action=allow", "ports:"),
        ("action=allow", "ports= and action= are required"),
        ("; ".join(["ports=80 action=allow"] * 257), "at most 256 lines"),
    ],
)
def test_a_bad_policy_is_refused_and_nothing_is_stored(
    service: RunningService, value: str, field: str
) -> None:
    client = service.client()
    client.set_feature("work", POLICY, "ports=1-65535 action=deny")
    with pytest.raises(QubesdError) as refused:
        client.set_feature("work", POLICY, value)
    assert refused.value.exc_type == "QubesValueError"
    assert f"{POLICY}: " in refused.value.message and field in refused.value.message
    assert client.get_feature("work", POLICY) == "ports=1-65535 action=deny"
    with pytest.raises(QubesdError):
        client.set_feature("personal", POLICY, value)
    assert POLICY not in client.list_features("personal")


def test_a_policy_set_as_a_feature_decides_requests(service: RunningService) -> None:
    client = service.client()
    client.set_feature("work", POLICY, "ports=18080 action=deny;ports=1024-65535 action=allow")
    with pytest.raises(QubesdError, match="denied by policy"):
        client.nat_request("sys-firewall", ask())
    granted = client.nat_request("sys-firewall", ask(external=18081))
    assert (granted["result"], granted["port"]) == ("granted", "18081")
    client.remove_feature("work", POLICY)
    assert client.nat_request("sys-firewall", ask(internal=9000))["result"] == "pending"
    assert len(nat_rules(service, "work")) == 1


def test_the_policy_methods_are_gone(service: RunningService) -> None:
    for method in ("admin.vm.portfwd.NatPolicy.Get", "admin.vm.portfwd.NatPolicy.Set"):
        with pytest.raises(QubesdError, match="No such method"):
            service.client().call("work", method)


def test_an_old_policy_file_moves_into_features_once(tmp_path) -> None:
    running = make_service(tmp_path, agent_timeout=0.05)
    running.state_dir.mkdir(parents=True)
    old = running.state_dir / "nat-policy.json"
    document = {
        "version": 1,
        "qubes": {
            "work": "ports=18080 action=deny max-lifetime=3600\nports=1-65535 action=allow\n",
            "gone": "ports=1-65535 action=allow max-lifetime=3600\n",
        },
    }
    old.write_text(json.dumps(document))
    running.start()
    try:
        client = running.client()
        assert client.get_feature("work", POLICY) == (
            "ports=18080 action=deny max-lifetime=3600; "
            "ports=1-65535 action=allow max-lifetime=3600"
        )
        with pytest.raises(QubesdError, match="denied by policy"):
            client.nat_request("sys-firewall", ask())
        assert client.nat_request("sys-firewall", ask(external=18081))["result"] == "granted"
        assert not old.exists()
        kept = running.state_dir / "nat-policy.json.migrated"
        assert json.loads(kept.read_text()) == document  # the qube that is gone: not lost
        client.set_feature("work", POLICY, "ports=1-65535 action=ask")
    finally:
        running.stop()
    running.start()  # a restart migrates nothing again: the newer feature stays
    try:
        assert running.client().get_feature("work", POLICY) == "ports=1-65535 action=ask"
    finally:
        running.stop()
