"""qvm-portfwd list draws a VPN forward from the provider's public endpoint."""

import ipaddress

from qubes_portfwd.cli.forward_view import forward_json, path_text
from qubes_portfwd.model.forward_status import (
    ForwardState,
    ForwardStatus,
    HopState,
    HopStatus,
    PublicEndpoint,
)
from qubes_portfwd.model.rule import ForwardRule
from qubes_portfwd.model.rule_text import parse_rule

RULE_TEXT = (
    "action=forward forwardtype=external srcports=80-80 dstports=8080-8080 "
    "srchost=0.0.0.0/0 via=sys-vpn"
)
PROVIDER = ipaddress.IPv4Address("203.0.113.2")


def status(*public: PublicEndpoint) -> ForwardStatus:
    hops = (
        HopStatus("sys-vpn", "edge", HopState.APPLIED),
        HopStatus("vpn-work", "target", HopState.APPLIED),
    )
    return ForwardStatus(
        "0123456789ab", "vpn-work", RULE_TEXT, 4, ForwardState.ACTIVE, None, hops, public
    )


def rule() -> ForwardRule:
    parsed = parse_rule(RULE_TEXT)
    assert isinstance(parsed, ForwardRule)
    return parsed


def test_one_public_endpoint_starts_the_path() -> None:
    shown = path_text(status(PublicEndpoint("tcp", 80, PROVIDER, 40001)), rule(), {"sys-vpn"})
    assert shown == "VPN 203.0.113.2:40001 → sys-vpn[applied] → vpn-work:8080[applied]"


def test_several_endpoints_name_protocol_and_port() -> None:
    shown = path_text(
        status(
            PublicEndpoint("tcp", 80, PROVIDER, 40001), PublicEndpoint("udp", 80, PROVIDER, 41002)
        ),
        rule(),
        {"sys-vpn"},
    )
    assert shown.startswith("VPN 203.0.113.2:40001/tcp→80,203.0.113.2:41002/udp→80 → sys-vpn")


def test_without_a_lease_the_path_is_drawn_as_before() -> None:
    assert path_text(status(), rule(), {"sys-vpn"}).startswith("VPN → sys-vpn[applied]")


def test_json_carries_the_public_endpoint() -> None:
    value = forward_json(status(PublicEndpoint("tcp", 80, PROVIDER, 40001)), 0.0)
    assert value["public"] == [
        {"proto": "tcp", "port": 80, "address": "203.0.113.2", "public_port": 40001}
    ]
