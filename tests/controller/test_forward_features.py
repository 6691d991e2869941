"""Forwards stored as features `portfwd.<id>` of their target: checked before they are stored
(refused with the field, never rewritten), planned, removed; firewall methods carry accept/drop
only; a forward left in an older firewall.xml moves into a feature; the status document."""

import threading
from pathlib import Path

import pytest

from admin_service import BOOT_ID, RunningService
from qubes_lab.qubesd.firewall_xml import load_firewall, save_firewall
from qubes_portfwd.client import ForwardState, QubesdError
from qubes_portfwd.model import status_document
from qubes_portfwd.model.rule import Action, FilterRule, forward_id
from qubes_portfwd.model.rule_text import parse_rule

WEB = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=192.0.2.0/24"
)
PATH = "via=sys-firewall,sys-net"
OTHER_BOOT = "11111111-2222-3333-4444-555555555555"
OTHER = WEB.replace("srcports=80-80", "srcports=81-81")
FROM_NOBODY = (
    "action=forward forwardtype=internal proto=tcp srcports=22-22 dstports=22-22 "
    "srchost=nosuch via=sys-firewall"
)


def fid(line: str, qube: str = "work") -> str:
    rule = parse_rule(line)
    return forward_id(qube, rule)  # type: ignore[arg-type]


def name_of(line: str, qube: str = "work") -> str:
    return f"portfwd.{fid(line, qube)}"


def snapshot(service: RunningService) -> tuple[object, ...]:
    """Everything a refused Set must leave as it was: features, files, entries, statuses."""
    client = service.client()
    xml = service.firewall_xml("work")
    return (
        client.list_features("work"),
        client.list_features("personal"),
        (service.state_dir / "topology.json").read_bytes(),
        xml.read_bytes() if xml.exists() else None,
        service.store("work").read(),
        client.forwards(),
    )


@pytest.mark.parametrize(
    ("qube", "name", "value", "field"),
    [
        # the name's id is not the value's forward
        ("work", name_of(OTHER), f"{WEB} {PATH}", "feature name"),
        ("work", "portfwd.nothex", f"{WEB} {PATH}", "feature name"),
        # incomplete: the service may not fill it in
        ("work", name_of(WEB), WEB, "via"),
        ("work", name_of(WEB), f"{WEB} via=other-net,sys-net", "via"),
        ("work", name_of(WEB), f"{WEB} {PATH} expire=boot", "expire"),
        ("work", name_of(WEB), f"{WEB} {PATH} expire=boot:{OTHER_BOOT}", "expire"),
        ("work", name_of(WEB), f"{WEB} {PATH} expire=1000", "expire"),
        ("work", name_of(WEB), f"{WEB} {PATH} comment=caf\u00e9", "printable ASCII"),
        ("work", name_of(WEB), f"{WEB} {PATH}\n{WEB} {PATH}", "printable ASCII"),
        ("work", name_of(WEB), "action=accept proto=tcp dstports=80-80", "action"),
        ("work", name_of(WEB), f"{WEB} {PATH} srcports=81", "srcports"),
        ("work", name_of(FROM_NOBODY), FROM_NOBODY, "srchost"),
    ],
)
def test_a_bad_forward_feature_is_refused_naming_the_field_and_changes_nothing(
    service: RunningService, qube: str, name: str, value: str, field: str
) -> None:
    before = snapshot(service)
    with pytest.raises(QubesdError) as caught:
        service.client().set_feature(qube, name, value)
    assert caught.value.exc_type == "QubesValueError"
    assert field in caught.value.message and name in caught.value.message
    assert snapshot(service) == before


def test_the_refusals_say_what_is_expected(service: RunningService) -> None:
    client = service.client()
    wrong = name_of(OTHER)
    with pytest.raises(QubesdError, match=f"name it {name_of(WEB)}"):
        client.set_feature("work", wrong, f"{WEB} {PATH}")
    with pytest.raises(QubesdError, match=r"via=sys-firewall,sys-net .*or follow=yes"):
        client.set_feature("work", name_of(WEB), WEB)
    with pytest.raises(QubesdError, match=f"expected expire=boot:{BOOT_ID}"):
        client.set_feature("work", name_of(WEB), f"{WEB} {PATH} expire=boot")


def test_a_conflicting_forward_feature_is_refused_naming_the_older_one(
    service: RunningService,
) -> None:
    client = service.client()
    client.set_feature("work", name_of(WEB), f"{WEB} {PATH}")
    other = WEB.replace("8080-8080", "9090-9090")
    before = snapshot(service)
    with pytest.raises(QubesdError) as caught:
        client.set_feature("personal", name_of(other, "personal"), f"{other} {PATH}")
    assert fid(WEB) in caught.value.message
    assert snapshot(service) == before


def test_a_complete_forward_feature_is_listed_and_planned(service: RunningService) -> None:
    client = service.client()
    value = f"{WEB} {PATH} expire=boot:{BOOT_ID} comment=set by hand"
    client.set_feature("work", name_of(WEB), value)
    assert client.list_features("work") == ["ipv6", name_of(WEB)]
    assert client.get_feature("work", name_of(WEB)) == value
    [forward] = client.forwards()  # in the document when the Set returns
    assert (forward.id, forward.state, forward.rule) == (fid(WEB), ForwardState.ACTIVE, value)
    assert [h.qube for h in forward.hops] == ["sys-net", "sys-firewall", "work"]
    assert any(k.startswith("/qubes-portfwd/") for k in service.store("work").read()[1])
    assert client.firewall_get("work") == ["action=accept"]
    assert not service.firewall_xml("work").exists()  # a forward never touches it

    client.remove_feature("work", name_of(WEB))
    assert client.forwards() == []
    assert not any(k.startswith("/qubes-portfwd/") for k in service.store("work").read()[1])
    with pytest.raises(QubesdError) as caught:
        client.remove_feature("work", name_of(WEB))
    assert caught.value.exc_type == "QubesFeatureNotFoundError"


def test_setting_the_same_value_twice_changes_nothing(service: RunningService) -> None:
    client = service.client()
    client.set_feature("work", name_of(WEB), f"{WEB} {PATH}")
    topology_before = (service.state_dir / "topology.json").read_bytes()
    sequence = client.status().sequence
    client.set_feature("work", name_of(WEB), f"{WEB} {PATH}")
    assert (service.state_dir / "topology.json").read_bytes() == topology_before
    assert client.status().sequence == sequence  # nothing re-planned or published


def test_a_stored_forward_keeps_its_old_path_when_set_again(service: RunningService) -> None:
    client = service.client()
    client.set_feature("work", name_of(WEB), f"{WEB} {PATH}")
    client.set_property("work", "netvm", "other-net")
    # Its comment changes; the path it was made for stays (shown inactive until rebound).
    client.set_feature("work", name_of(WEB), f"{WEB} {PATH} comment=old path")
    [forward] = client.forwards()
    assert forward.state == ForwardState.INACTIVE
    # A new forward must name the path now.
    with pytest.raises(QubesdError, match="via"):
        client.set_feature("work", name_of(OTHER), f"{OTHER} {PATH}")
    client.set_feature("work", name_of(OTHER), f"{OTHER} via=other-net,sys-net")


def test_firewall_set_with_a_forward_is_refused_and_stores_nothing(
    service: RunningService,
) -> None:
    client = service.client()
    client.add_forward("work", WEB)
    client.firewall_set("work", ["action=drop proto=tcp dstports=25-25", "action=accept"])
    before = snapshot(service)
    with pytest.raises(QubesdError) as caught:
        client.firewall_set("work", ["action=accept", f"{WEB} {PATH}"])
    assert caught.value.exc_type == "QubesValueError"
    assert caught.value.message.startswith("action: forward rules are stored as features")
    assert "use qvm-portfwd" in caught.value.message and "line 2" in caught.value.message
    assert snapshot(service) == before
    # Get of a forwarding qube: accept/drop only, as a stock client can read it.
    assert client.firewall_get("work") == ["action=drop proto=tcp dstports=25-25", "action=accept"]
    assert all("forward" not in line for line in service.firewall_xml("work").read_text().split())


def test_a_firewall_xml_with_forwards_moves_them_into_features_once(
    service: RunningService,
) -> None:
    service.stop()
    kept = FilterRule(Action.DROP, proto="tcp")
    forward = parse_rule(f"{WEB} {PATH}")
    service.firewall_xml("work").parent.mkdir(parents=True, exist_ok=True)
    save_firewall(service.firewall_xml("work"), [kept, forward], 0.0, BOOT_ID)
    service.start()
    client = service.client()
    assert client.get_feature("work", name_of(WEB)) == f"{WEB} {PATH}"
    assert load_firewall(service.firewall_xml("work")) == [kept]
    assert client.firewall_get("work") == ["action=drop proto=tcp"]
    assert [f.id for f in client.forwards()] == [fid(WEB)]


def test_the_status_document_has_paths_boot_and_forwards(service: RunningService) -> None:
    client = service.client()
    client.add_forward("work", WEB)
    document = status_document.loads(service.status_file.read_bytes())
    assert document.boot_id == BOOT_ID
    assert document.qubes["work"].path == ("sys-firewall", "sys-net")
    assert document.qubes["work"].netvm == "sys-firewall"
    assert document.qubes["sys-net"].path is None and document.qubes["sys-net"].path_error
    assert [f.id for f in document.forwards] == [fid(WEB)]
    client.set_property("work", "netvm", "other-net")
    newer = status_document.loads(service.status_file.read_bytes())
    assert newer.sequence > document.sequence
    assert newer.qubes["work"].path == ("other-net", "sys-net")


def test_the_status_document_is_never_seen_half_written(service: RunningService) -> None:
    """A reader racing every write reads a whole document each time (one rename per write)."""
    stop = threading.Event()
    seen: list[int] = []
    broken: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(status_document.loads(service.status_file.read_bytes()).sequence)
            except Exception as err:  # any failure is the finding
                broken.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        client = service.client()
        for port in range(1000, 1030):
            client.add_forward("work", WEB.replace("srcports=80-80", f"srcports={port}-{port}"))
    finally:
        stop.set()
        reader.join(timeout=10)
    assert broken == []
    assert len(set(seen)) > 1 and seen == sorted(seen)


def test_add_reads_a_stale_document_again_and_retries(service: RunningService) -> None:
    """A document from before a netvm change makes the service refuse the path: re-read."""
    client = service.client()
    stale = service.status_file.read_bytes()
    client.set_property("work", "netvm", "other-net")
    service.status_file.write_bytes(stale)  # as if the change were not written yet
    # The next publish (any change) writes a fresh document.
    timer = threading.Timer(0.3, lambda: service.client().set_feature("personal", "x", "1"))
    timer.start()
    try:
        new_id = client.add_forward("work", WEB)
    finally:
        timer.join()
    assert client.get_feature("work", f"portfwd.{new_id}") == f"{WEB} via=other-net,sys-net"


def test_an_unreadable_status_document_is_a_clear_error(
    service: RunningService, tmp_path: Path
) -> None:
    client = service.client()
    client.status_path = tmp_path / "nothing.json"
    with pytest.raises(ConnectionError, match="no status document"):
        client.forwards()
    (tmp_path / "nothing.json").write_text("{")
    with pytest.raises(ConnectionError, match="not a status document"):
        client.forwards()
