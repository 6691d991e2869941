"""firewall.xml under attack: entity bombs, external entities, deep nesting, huge and
non-UTF-8 files are refused quickly with a ValidationError; saving then loading round-trips."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubes_lab.qubesd import firewall_xml
from qubes_lab.qubesd.firewall_xml import (
    MAX_FIREWALL_XML_BYTES,
    load_firewall,
    parse_firewall_xml,
    save_firewall,
)
from qubes_portfwd.model.errors import ValidationError
from strategies import rules

from .limits import examples, time_limit

BOOT = "b00t"
HOSTILE_SECONDS = 10.0
_LAUGHS = "".join(
    f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' if n else '<!ENTITY lol0 "lol">' for n in range(10)
)
_RULE = '<rule><properties><property name="action">accept</property></properties></rule>'
HOSTILE = {
    "billion laughs": f'<?xml version="1.0"?><!DOCTYPE firewall [{_LAUGHS}]>'
    '<firewall version="2"><rules>&lol9;</rules></firewall>',
    "external entity": '<?xml version="1.0"?><!DOCTYPE firewall [<!ENTITY x SYSTEM '
    '"file:///etc/shadow">]><firewall version="2"><rules>&x;</rules></firewall>',
    "external DTD": '<!DOCTYPE firewall SYSTEM "http://192.0.2.1/x.dtd">'
    '<firewall version="2"><rules/></firewall>',
    "parameter entity": '<!DOCTYPE firewall [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
    '<firewall version="2"><rules/></firewall>',
    "quadratic blowup": f'<!DOCTYPE firewall [<!ENTITY a "{"x" * 50000}">]>'
    f'<firewall version="2"><rules>{"&a;" * 5000}</rules></firewall>',
    "deep nesting": '<firewall version="2"><rules>'
    + "<rule>" * 200_000
    + "</rule>" * 200_000
    + "</rules></firewall>",
    "many attributes": '<firewall version="2" '
    + " ".join(f"a{n}='x'" for n in range(50_000))
    + "><rules/></firewall>",
    "invalid UTF-8": '<firewall version="2"><rules><rule><properties><property name="comment">'
    "\udcff</property></properties></rule></rules></firewall>",
    "xinclude": '<firewall version="2" xmlns:xi="http://www.w3.org/2001/XInclude">'
    '<rules><xi:include href="/etc/passwd" parse="text"/></rules></firewall>',
    "processing instruction and text": '<?evil x?><firewall version="2">text<rules/></firewall>',
    "many rules of unknown tags": '<firewall version="2"><rules>'
    + "<x/>" * 100_000
    + "</rules></firewall>",
    "comment property with markup": '<firewall version="2"><rules>'
    + _RULE.replace("</properties>", '<property name="comment">a &lt;b&gt;</property></properties>')
    + "</rules></firewall>",
    "UTF-16": '<?xml version="1.0" encoding="UTF-16"?><firewall version="2"><rules/></firewall>',
}


def _bytes(document: str) -> bytes:
    return document.encode("utf-8", errors="surrogateescape")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_are_refused_quickly(name: str) -> None:
    # Far above the ~0.5 s the biggest of these takes: a hang, not a slow machine.
    with time_limit(HOSTILE_SECONDS), pytest.raises(ValidationError) as refused:
        parse_firewall_xml(_bytes(HOSTILE[name]))
    assert refused.value.field in ("firewall.xml", "comment", "version")
    assert "/etc/" not in str(refused.value) and len(str(refused.value)) < 1000


def test_a_file_over_the_limit_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    with path.open("wb") as out:  # sparse: 64 MiB that cost no disk space
        out.truncate(4 * MAX_FIREWALL_XML_BYTES)
    with time_limit(), pytest.raises(ValidationError) as refused:
        load_firewall(path)
    assert refused.value.field == "firewall.xml" and "larger than" in refused.value.message
    with time_limit(), pytest.raises(ValidationError):
        parse_firewall_xml(b" " * (MAX_FIREWALL_XML_BYTES + 1))


def test_a_valid_document_just_under_the_limit_loads(tmp_path: Path) -> None:
    head, tail = b'<firewall version="2"><rules>', b"</rules></firewall>"
    padding = MAX_FIREWALL_XML_BYTES - len(head) - len(tail)
    with time_limit(10):
        assert parse_firewall_xml(head + b" " * padding + tail) == []


@settings(max_examples=examples(25), deadline=None)
@given(st.lists(rules(bound=True), max_size=20), st.floats(-1, 2**41, allow_nan=False))
def test_save_then_load_round_trips(tmp_path_factory, stored: list, now: float) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("rt") / "firewall.xml"
    save_firewall(path, stored, now, BOOT)
    live = [r for r in stored if r.expire is None or not r.expire.expired(now, BOOT)]
    assert load_firewall(path) == live
    save_firewall(path, live, now, BOOT)  # and a second save is byte-identical
    first = path.read_bytes()
    save_firewall(path, load_firewall(path), now, BOOT)
    assert path.read_bytes() == first


def test_parsing_stops_at_the_element_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by fuzzing: a flat 16 MiB document took seconds and hundreds of MB to parse.
    monkeypatch.setattr(firewall_xml, "MAX_ELEMENTS", 100)
    document = b'<firewall version="2"><rules>' + b"<rule/>" * 200 + b"</rules></firewall>"
    with pytest.raises(ValidationError) as refused:
        parse_firewall_xml(document)
    assert "more than 100 elements" in refused.value.message


def test_unexpected_attributes_are_not_all_echoed() -> None:
    # Found by fuzzing: 50,000 attributes made a 480 kB error message.
    with pytest.raises(ValidationError) as refused:
        parse_firewall_xml(_bytes(HOSTILE["many attributes"]))
    assert "and 49995 more" in refused.value.message
