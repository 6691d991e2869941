"""qvm-firewall's rule words: Qubes' positional order, key=value, and the forward extension."""

import pytest

from qubes_portfwd.cli.rule_words import rule_from_words, rule_line_from_words
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import ExpireAt, FilterRule, ForwardRule, UntilReboot
from qubes_portfwd.model.rule_text import format_rule

NOW = 1_700_000_000.7


def line(*words: str) -> str:
    return format_rule(rule_from_words(words, NOW))


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("accept",), "action=accept"),
        (("drop", "10.0.0.0/8"), "action=drop dst4=10.0.0.0/8"),
        (
            ("accept", "10.1.2.3", "tcp", "443"),
            "action=accept dst4=10.1.2.3/32 proto=tcp dstports=443-443",
        ),
        (
            ("accept", "fd00::/8", "udp", "1200-1400"),
            "action=accept dst6=fd00::/8 proto=udp dstports=1200-1400",
        ),
        (
            ("drop", "example.com", "icmp", "8"),
            "action=drop dsthost=example.com proto=icmp icmptype=8",
        ),
        (("accept", "specialtarget=dns"), "action=accept specialtarget=dns"),
        (("action=accept", "proto=tcp", "dstports=22"), "action=accept proto=tcp dstports=22-22"),
        (
            ("accept", "dst4=192.0.2.1", "tcp", "80"),
            "action=accept dst4=192.0.2.1/32 proto=tcp dstports=80-80",
        ),
        (("accept", "comment=web and mail"), "action=accept comment=web and mail"),
    ],
)
def test_qubes_forms_give_qubes_lines(words: tuple[str, ...], expected: str) -> None:
    assert line(*words) == expected


def test_relative_expire_becomes_an_absolute_time() -> None:
    rule = rule_from_words(["accept", "expire=+300"], NOW)
    assert isinstance(rule, FilterRule)
    assert rule.expire == ExpireAt(1_700_000_300)


def test_relative_expire_takes_units_too() -> None:
    rule = rule_from_words(["accept", "expire=+2m"], NOW)
    assert rule.expire == ExpireAt(1_700_000_120)


def test_absolute_expire_is_kept() -> None:
    assert line("accept", "expire=1800000000") == "action=accept expire=1800000000"


def test_forward_in_key_value_form() -> None:
    words = (
        "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=0.0.0.0/0"
    )
    assert line(*words.split()) == (
        "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
        "srchost=0.0.0.0/0"
    )


def test_forward_in_positional_form() -> None:
    rule = rule_from_words(["forward", "internal", "tcp", "22", "2222", "personal,vault"], NOW)
    assert isinstance(rule, ForwardRule)
    assert rule.srchost == ("personal", "vault")
    assert (rule.srcports.short, rule.dstports.short) == ("22", "2222")


def test_forward_until_reboot() -> None:
    rule = rule_from_words(
        ["forward", "external", "srcports=53", "srchost=192.0.2.0/24", "expire=boot"], NOW
    )
    assert isinstance(rule, ForwardRule)
    assert rule.expire == UntilReboot(None)
    assert rule.proto is None


@pytest.mark.parametrize(
    ("words", "field"),
    [
        (("allow",), "action"),
        (("accept", "10.0.0.0/8", "tcp", "80", "extra"), "rule"),
        (("accept", "proto=tcp", "proto=udp"), "proto"),
        (("accept", "dst4=10.0.0.1", "dsthost=10.0.0.2"), "dsthost"),
        (("accept", "dsthost=a b"), "dsthost"),
        (("accept", "dsthost=a=b"), "dsthost"),
        (("accept", "proto="), "proto"),
        (("accept", "color=red"), "color"),
        (("accept", "expire=+soon"), "expire"),
        (("forward", "external", "tcp", "80", "8080", "work"), "srchost"),
        (("forward", "external", "tcp", "80"), "srchost"),
    ],
)
def test_bad_words_name_the_field(words: tuple[str, ...], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        rule_from_words(words, NOW)
    assert caught.value.field == field


def test_values_cannot_smuggle_options() -> None:
    with pytest.raises(ValidationError):
        rule_line_from_words(["accept", "dsthost=10.0.0.1 specialtarget=dns"], NOW)
