"""qvm-portfwd add's friendly arguments become one forward rule line."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.cli.forward_request import ForwardRequest, forward_rule, forward_rule_line
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import ExpireAt, ForwardType, UntilReboot
from qubes_portfwd.model.rule_text import format_rule

NOW = 1_700_000_000.0
EXTERNAL = ForwardType.EXTERNAL
INTERNAL = ForwardType.INTERNAL


def request(**changes: object) -> ForwardRequest:
    fields: dict[str, object] = {
        "untrusted_proto": "tcp",
        "untrusted_ports": "80:8080",
        "forwardtype": EXTERNAL,
        "untrusted_sources": "192.0.2.0/24",
    }
    fields.update(changes)
    return ForwardRequest(**fields)  # type: ignore[arg-type]


def test_the_demo_forward() -> None:
    assert forward_rule_line(request(), NOW) == (
        "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 "
        "srchost=192.0.2.0/24"
    )


def test_both_protocols_omit_proto_and_same_port_omits_dstports() -> None:
    rule = forward_rule(request(untrusted_proto="both", untrusted_ports="5000-5010"), NOW)
    assert rule.proto is None
    assert rule.dstports == rule.srcports


def test_any_is_the_written_out_wildcard() -> None:
    rule = forward_rule(request(untrusted_sources="any"), NOW)
    assert "srchost=0.0.0.0/0" in format_rule(rule)


def test_internal_takes_qube_names() -> None:
    rule = forward_rule(
        request(forwardtype=INTERNAL, untrusted_sources="personal,vault", untrusted_ports="22"),
        NOW,
    )
    assert rule.srchost == ("personal", "vault")


def test_for_gives_an_absolute_expiry() -> None:
    assert forward_rule(request(untrusted_duration="2h"), NOW).expire == ExpireAt(1_700_007_200)


def test_until_reboot() -> None:
    assert forward_rule(request(until_reboot=True), NOW).expire == UntilReboot(None)


def test_comment_and_follow() -> None:
    rule = forward_rule(request(untrusted_comment="my web server", follow=True), NOW)
    assert rule.comment == "my web server"
    assert rule.follow


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"untrusted_proto": "icmp"}, "PROTO"),
        ({"untrusted_ports": "80:"}, "QUBE_PORT"),
        ({"untrusted_ports": "0"}, "OUTSIDE_PORT"),
        ({"untrusted_ports": "80-81:90"}, "QUBE_PORT"),
        ({"untrusted_ports": "http"}, "OUTSIDE_PORT"),
        ({"untrusted_sources": "work"}, "--from"),
        ({"untrusted_sources": "192.0.2.1/24"}, "--from"),
        ({"untrusted_sources": "192.0.2.0/24,2001:db8::/32"}, "--from"),
        ({"untrusted_sources": "any", "forwardtype": INTERNAL}, "--from"),
        ({"untrusted_sources": "10.0.0.0/8", "forwardtype": INTERNAL}, "--from"),
        ({"untrusted_duration": "soon"}, "--for"),
        ({"untrusted_duration": "0s"}, "--for"),
        ({"untrusted_duration": "1h", "until_reboot": True}, "--for"),
        ({"untrusted_comment": "a;b=c"}, "--comment"),
        ({"untrusted_ports": "80 via=sys-net"}, "OUTSIDE_PORT"),
    ],
)
def test_errors_name_the_argument_the_user_typed(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        forward_rule(request(**changes), NOW)
    assert caught.value.field == field


@given(
    outside=st.integers(1, 65535),
    inside=st.integers(1, 65535),
    proto=st.sampled_from(["tcp", "udp", "both"]),
)
def test_ports_survive_the_trip_through_the_rule_text(
    outside: int, inside: int, proto: str
) -> None:
    rule = forward_rule(request(untrusted_proto=proto, untrusted_ports=f"{outside}:{inside}"), NOW)
    assert (rule.srcports.first, rule.dstports.first) == (outside, inside)
    assert rule.protos == (("tcp", "udp") if proto == "both" else (proto,))
