"""The add/edit form: each wrong field gets the model's message; a valid form gives the line."""

import pytest

from qubes_portfwd.gui.forward_form import (
    COMMENT,
    OUTSIDE_PORTS,
    QUBE_PORTS,
    SOURCES,
    Expiry,
    ForwardForm,
    check_form,
    form_of_rule,
)
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.ports import parse_port_range
from qubes_portfwd.model.rule import ForwardRule, ForwardType
from qubes_portfwd.model.rule_text import parse_rule

NOW = 1_700_000_000.0


def _message(field: str, value: str) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_port_range(field, value)
    return caught.value.message


def test_a_valid_form_gives_the_cli_line() -> None:
    form = ForwardForm(untrusted_outside_ports="80", untrusted_qube_ports="8080")
    check = check_form(form, NOW)
    assert check.errors == {}
    assert check.line == (
        "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=0.0.0.0/0"
    )


@pytest.mark.parametrize("ports", ["", "http", "70000", "90-80", "1-2-3", "8 0"])
def test_a_bad_outside_port_is_explained_next_to_its_field(ports: str) -> None:
    check = check_form(ForwardForm(untrusted_outside_ports=ports), NOW)
    assert check.line is None
    assert set(check.errors) == {OUTSIDE_PORTS}
    if ports and " " not in ports:
        assert check.errors[OUTSIDE_PORTS] == _message("srcports", ports)


def test_every_wrong_field_says_so_at_once() -> None:
    form = ForwardForm(
        untrusted_outside_ports="0",
        untrusted_qube_ports="x",
        untrusted_sources="work",
        untrusted_comment="no <tags>",
    )
    errors = check_form(form, NOW).errors
    assert set(errors) == {OUTSIDE_PORTS, QUBE_PORTS, SOURCES, COMMENT}
    assert "port 0 is out of range" in errors[OUTSIDE_PORTS]
    assert "'work' is a qube name" in errors[SOURCES]


def test_range_lengths_must_match_and_the_message_is_the_models() -> None:
    errors = check_form(
        ForwardForm(untrusted_outside_ports="6000-6010", untrusted_qube_ports="7000"), NOW
    ).errors
    with pytest.raises(ValidationError) as caught:
        parse_rule(
            "action=forward forwardtype=external srcports=6000-6010 dstports=7000 srchost=::/0"
        )
    assert errors == {QUBE_PORTS: caught.value.message}


def test_internal_forwards_name_qubes_and_refuse_any() -> None:
    internal = ForwardForm(forwardtype=ForwardType.INTERNAL, untrusted_outside_ports="22")
    assert "only for external" in check_form(internal, NOW).errors[SOURCES]
    named = ForwardForm(
        forwardtype=ForwardType.INTERNAL, untrusted_outside_ports="22", untrusted_sources="personal"
    )
    assert check_form(named, NOW).line == (
        "action=forward forwardtype=internal proto=tcp srcports=22 srchost=personal"
    )


def test_empty_sources_are_required() -> None:
    form = ForwardForm(untrusted_outside_ports="22", untrusted_sources=" ")
    assert "required" in check_form(form, NOW).errors[SOURCES]


@pytest.mark.parametrize(
    ("expiry", "minutes", "suffix"),
    [
        (Expiry.NEVER, 5, ""),
        (Expiry.UNTIL_REBOOT, 5, " expire=boot"),
        (Expiry.FOR_MINUTES, 5, f" expire={int(NOW) + 300}"),
    ],
)
def test_expiry_is_a_choice(expiry: Expiry, minutes: int, suffix: str) -> None:
    form = ForwardForm(proto="both", untrusted_outside_ports="53", expiry=expiry, minutes=minutes)
    line = check_form(form, NOW).line
    assert line == f"action=forward forwardtype=external srcports=53 srchost=0.0.0.0/0{suffix}"


def test_minutes_out_of_range_are_refused_only_when_chosen() -> None:
    form = ForwardForm(untrusted_outside_ports="53", minutes=0)
    assert check_form(form, NOW).line is not None
    chosen = ForwardForm(untrusted_outside_ports="53", minutes=0, expiry=Expiry.FOR_MINUTES)
    assert "minutes" in check_form(chosen, NOW).errors


def test_editing_shows_the_rule_and_keeps_its_path() -> None:
    line = (
        "action=forward forwardtype=external proto=udp srcports=6000-6001 dstports=7000-7001 "
        "srchost=192.0.2.0/24 via=sys-firewall,sys-net expire=1700000600 comment=game server"
    )
    rule = parse_rule(line)
    assert isinstance(rule, ForwardRule)
    form = form_of_rule(rule, NOW)
    assert form.expiry == Expiry.FOR_MINUTES and form.minutes == 10
    assert form.untrusted_sources == "192.0.2.0/24"
    again = check_form(form, NOW).line
    assert again is not None
    assert parse_rule(again) == rule


def test_editing_shows_any_for_everyone() -> None:
    rule = parse_rule("action=forward forwardtype=external srcports=80-80 srchost=0.0.0.0/0")
    assert isinstance(rule, ForwardRule)
    assert form_of_rule(rule, NOW).untrusted_sources == "any"
    assert form_of_rule(rule, NOW).proto == "both"
