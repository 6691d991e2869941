"""The admin service through its socket, with the client library: qubes, properties, features,
firewall rules and forwards (features `portfwd.<id>`, statuses from the status document); a
real service, entry stores without agents."""

import threading

import pytest

from admin_service import BOOT_ID, RunningService, simulate_reboot, wait_until
from qubes_portfwd.client import ForwardState, HopState, QubesdError
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import forward_id
from qubes_portfwd.model.rule_text import parse_rule

WEB_FORM = (
    "action=forward forwardtype=external proto=tcp srcports={0}-{0} dstports={1}-{1} "
    "srchost=192.0.2.0/24"
)
WEB = WEB_FORM.format(80, 8080)


def web_id(line: str = WEB, qube: str = "work") -> str:
    rule = parse_rule(line)
    assert not isinstance(rule, type(None))
    return forward_id(qube, rule)  # type: ignore[arg-type]


def test_list_qubes_includes_dom0(service: RunningService) -> None:
    qubes = {q.name: q for q in service.client().list_qubes()}
    assert qubes["dom0"].klass == "AdminVM" and qubes["dom0"].state == "Running"
    assert set(qubes) == {
        "dom0",
        "sys-net",
        "sys-firewall",
        "work",
        "personal",
        "other-net",
        "vault",
    }
    only = service.client().call("work", "admin.vm.List").decode()
    assert only.startswith("work class=AppVM state=Running uuid=") and only.count("\n") == 1


def test_properties_in_qubes_reply_form(service: RunningService) -> None:
    client = service.client()
    assert client.call("work", "admin.vm.property.Get", "netvm") == (
        b"default=True type=vm sys-firewall"
    )
    assert client.get_property("work", "ip").value == "10.137.0.6"
    assert client.get_property("work", "ip6").value == "fd09:24ef:4179::a89:6"
    assert client.get_property("work", "qid").type == "int"
    assert client.get_property("sys-net", "netvm").value == ""
    assert client.get_property("sys-net", "provides_network").value == "True"
    assert set(client.list_properties("work")) >= {"netvm", "ip", "ip6", "provides_network"}
    everything = client.get_all_properties("work")
    assert everything["netvm"].value == "sys-firewall" and everything["netvm"].is_default


def test_property_set_and_reset(service: RunningService) -> None:
    client = service.client()
    client.set_property("work", "netvm", "other-net")
    value = client.get_property("work", "netvm")
    assert (value.is_default, value.value) == (False, "other-net")
    assert client.get_property("work", "gateway").value == "10.137.0.4"
    client.reset_property("work", "netvm")
    value = client.get_property("work", "netvm")
    assert (value.is_default, value.value) == (True, "sys-firewall")
    client.set_property("work", "netvm", "")
    assert client.get_property("work", "netvm").value == ""


@pytest.mark.parametrize(
    ("prop", "value", "exc_type"),
    [
        ("netvm", "nosuch", "QubesPropertyValueError"),
        ("netvm", "personal", "QubesValueError"),  # does not provide network
        ("qid", "9", "QubesValueError"),  # read-only
        ("ip", "10.0.0.300", "QubesPropertyValueError"),
        ("colour", "red", "QubesNoSuchPropertyError"),
    ],
)
def test_bad_property_set_is_refused(
    service: RunningService, prop: str, value: str, exc_type: str
) -> None:
    with pytest.raises(QubesdError) as caught:
        service.client().set_property("work", prop, value)
    assert caught.value.exc_type == exc_type
    assert prop in caught.value.message


def test_netvm_loop_refused(service: RunningService) -> None:
    with pytest.raises(QubesdError, match="loop"):
        service.client().set_property("sys-net", "netvm", "sys-firewall")


def test_features(service: RunningService) -> None:
    client = service.client()
    assert client.get_feature("work", "ipv6") == "1"
    client.set_feature("work", "purpose", "testing")
    assert client.list_features("work") == ["ipv6", "purpose"]
    client.remove_feature("work", "purpose")
    with pytest.raises(QubesdError) as caught:
        client.get_feature("work", "purpose")
    assert caught.value.exc_type == "QubesFeatureNotFoundError"
    with pytest.raises(QubesdError, match="portfwd-uplink"):
        client.set_feature("sys-net", "portfwd-uplink", "eth0; drop")


def test_firewall_default_and_round_trip(service: RunningService) -> None:
    client = service.client()
    assert client.firewall_get("work") == ["action=accept"]
    lines = [
        "action=accept dst4=10.1.2.3/24 proto=tcp dstports=443-443",
        "action=accept specialtarget=dns",
        "action=drop",
    ]
    client.firewall_set("personal", lines)
    assert client.firewall_get("personal") == lines
    assert service.firewall_xml("personal").exists()


def test_add_fills_via_and_binds_boot(service: RunningService) -> None:
    client = service.client()
    client.add_forward("work", f"{WEB} expire=boot comment=web server")
    stored = client.get_feature("work", f"portfwd.{web_id()}")
    assert stored == f"{WEB} via=sys-firewall,sys-net expire=boot:{BOOT_ID} comment=web server"
    internal = "action=forward forwardtype=internal proto=tcp srcports=22-22 srchost=personal"
    internal_id = client.add_forward("work", internal)
    assert client.get_feature("work", f"portfwd.{internal_id}") == (
        "action=forward forwardtype=internal proto=tcp srcports=22-22 dstports=22-22 "
        "srchost=personal via=sys-firewall"
    )
    assert client.firewall_get("work") == ["action=accept"]


def test_bad_line_changes_nothing(service: RunningService) -> None:
    client = service.client()
    client.firewall_set("work", ["action=drop proto=tcp dstports=25", "action=accept"])
    client.add_forward("work", WEB)
    before = service.firewall_xml("work").read_bytes()
    entries_before = service.store("sys-net").read()
    bad = ["action=accept", "action=drop proto=tcp dstports=99999"]
    with pytest.raises(QubesdError) as caught:
        client.firewall_set("work", ["action=drop", *bad])
    assert caught.value.exc_type == "QubesValueError"
    assert "dstports" in caught.value.message and "line 3" in caught.value.message
    assert service.firewall_xml("work").read_bytes() == before
    assert service.store("sys-net").read() == entries_before
    assert client.firewall_get("work")[1] == "action=accept"


def test_non_ascii_payload_names_the_line(service: RunningService) -> None:
    payload = "action=accept\naction=drop comment=caf\u00e9\n".encode()
    with pytest.raises(QubesdError) as caught:
        service.client().call("work", "admin.vm.firewall.Set", payload=payload)
    assert "line 2" in caught.value.message
    assert not service.firewall_xml("work").exists()


def test_conflicting_forward_refused_naming_the_first(service: RunningService) -> None:
    client = service.client()
    client.add_forward("work", WEB)
    other = WEB_FORM.format(80, 9090)
    with pytest.raises(QubesdError) as caught:
        client.add_forward("personal", other)
    assert web_id() in caught.value.message
    assert not any(name.startswith("portfwd.") for name in client.list_features("personal"))


def test_forward_views_without_agents_show_pending(service: RunningService) -> None:
    client = service.client()
    client.add_forward("work", WEB)
    [forward] = client.forwards()
    assert (forward.id, forward.target, forward.family) == (web_id(), "work", 4)
    assert forward.state == ForwardState.ACTIVE
    assert [(h.qube, h.role) for h in forward.hops] == [
        ("sys-net", "edge"),
        ("sys-firewall", "netvm"),
        ("work", "target"),
    ]
    assert {h.state for h in forward.hops} == {HopState.PENDING}
    assert [f.id for f in client.forwards_through("sys-firewall")] == [web_id()]
    assert client.forwards_through("other-net") == []
    assert [f.id for f in client.forwards_of("work")] == [web_id()]
    # The target's entry is out; outer hops wait for it to be applied.
    assert any(k.startswith("/qubes-portfwd/") for k in service.store("work").read()[1])
    assert not any(k.startswith("/qubes-portfwd/") for k in service.store("sys-net").read()[1])


def test_netvm_change_makes_forward_inactive_until_rebind(service: RunningService) -> None:
    client = service.client()
    client.add_forward("work", WEB)
    client.set_property("work", "netvm", "other-net")
    [forward] = client.forwards()
    assert forward.state == ForwardState.INACTIVE and "via" in (forward.reason or "")
    assert {h.state for h in forward.hops} == {HopState.INACTIVE}
    client.rebind("work", forward.id)
    assert "via=other-net,sys-net" in client.get_feature("work", f"portfwd.{forward.id}")
    assert client.forwards()[0].state == ForwardState.ACTIVE


def test_add_and_remove_forward(service: RunningService) -> None:
    client = service.client()
    assert client.add_forward("work", WEB) == web_id()
    assert client.list_features("work") == ["ipv6", f"portfwd.{web_id()}"]
    assert client.get_feature("work", f"portfwd.{web_id()}") == f"{WEB} via=sys-firewall,sys-net"
    assert client.firewall_get("work") == ["action=accept"]
    client.remove_forward("work", web_id())
    assert client.list_features("work") == ["ipv6"]
    assert client.forwards() == []
    with pytest.raises(ValidationError, match="no forward"):
        client.remove_forward("work", web_id())
    with pytest.raises(ValidationError, match="forward id"):
        client.rebind("work", "XYZ")


def test_firewall_methods_check_their_destination(service: RunningService) -> None:
    client = service.client()
    with pytest.raises(QubesdError) as caught:
        client.firewall_get("dom0")
    assert caught.value.exc_type == "ProtocolError"


def test_concurrent_adds_lose_nothing(service: RunningService) -> None:
    lines = [WEB_FORM.format(port, port) for port in range(1000, 1008)]
    errors: list[BaseException] = []

    def add(line: str) -> None:
        try:
            service.client().add_forward("work", line)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=add, args=(line,)) for line in lines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    client = service.client()
    stored = [
        client.get_feature("work", name)
        for name in client.list_features("work")
        if name.startswith("portfwd.")
    ]
    assert sorted(stored) == sorted(f"{line} via=sys-firewall,sys-net" for line in lines)


def test_concurrent_sets_of_different_qubes_both_land(service: RunningService) -> None:
    results: dict[str, list[str]] = {}
    rules = {
        "work": [WEB],
        "personal": [WEB_FORM.format(81, 81)],
    }

    def set_rules(qube: str) -> None:
        client = service.client()
        for line in rules[qube]:
            client.add_forward(qube, line)
        results[qube] = client.list_features(qube)

    threads = [threading.Thread(target=set_rules, args=(q,)) for q in rules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {f.target for f in service.client().forwards()} == {"work", "personal"}


def test_restart_keeps_every_forward(service: RunningService) -> None:
    client = service.client()
    client.add_forward("work", WEB)
    client.set_property("work", "ip", "10.137.0.66")
    before = client.forwards()
    service.stop()
    service.start()
    client = service.client()
    assert client.forwards() == before
    assert client.get_property("work", "ip").value == "10.137.0.66"
    assert not client.get_property("work", "ip").is_default


def test_reboot_expires_until_reboot_forwards(service: RunningService) -> None:
    client = service.client()
    client.add_forward("work", f"{WEB} expire=boot")
    assert len(client.forwards()) == 1
    simulate_reboot(service.boot_id_file, "11111111-2222-3333-4444-555555555555")
    # The next reconcile sees the new boot: the forward ends and its feature goes.
    wait_until(lambda: client.forwards() == [])
    wait_until(lambda: f"portfwd.{web_id()}" not in client.list_features("work"))
