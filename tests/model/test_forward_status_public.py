"""Public endpoints of forwards behind a VPN: the keeper's key form and the JSON both ways."""

import ipaddress

import pytest

from qubes_portfwd.model import forward_status as fs
from qubes_portfwd.model.errors import ValidationError

ID = "0123456789ab"
HOPS = (fs.HopStatus("sys-vpn", "edge", fs.HopState.APPLIED),)
ENDPOINT = fs.PublicEndpoint("tcp", 80, ipaddress.IPv4Address("203.0.113.2"), 40001)


def _status(public: tuple[fs.PublicEndpoint, ...] = ()) -> fs.ForwardStatus:
    return fs.ForwardStatus(
        ID, "vpn-work", "action=forward", 4, fs.ForwardState.ACTIVE, None, HOPS, public
    )


def test_keeper_entries_parse() -> None:
    key = fs.public_key(ID, "tcp", 80)
    assert key == f"/qubes-portfwd-public/{ID}/tcp/80"
    assert fs.parse_public_entry(key, "203.0.113.2:40001") == (ID, ENDPOINT)
    assert ENDPOINT.text == "203.0.113.2:40001"


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (f"/qubes-portfwd-public/{ID}/tcp", "203.0.113.2:1", "key"),
        (f"/qubes-portfwd/{ID}/tcp/80", "203.0.113.2:1", "key"),
        ("/qubes-portfwd-public/XYZ/tcp/80", "203.0.113.2:1", "id"),
        (f"/qubes-portfwd-public/{ID}/sctp/80", "203.0.113.2:1", "public.proto"),
        (f"/qubes-portfwd-public/{ID}/tcp/0", "203.0.113.2:1", "public.port"),
        (f"/qubes-portfwd-public/{ID}/tcp/\uff180", "203.0.113.2:1", "public.port"),
        (f"/qubes-portfwd-public/{ID}/tcp/80", "203.0.113.2", "public"),
        (f"/qubes-portfwd-public/{ID}/tcp/80", "2001:db8::1:80", "public.address"),
        (f"/qubes-portfwd-public/{ID}/tcp/80", "203.0.113.2:65536", "public.public_port"),
    ],
)
def test_malformed_keeper_entries_name_the_field(key: str, value: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        fs.parse_public_entry(key, value)
    assert caught.value.field == field


def test_json_round_trip_with_and_without_public() -> None:
    for status in (_status(), _status((ENDPOINT,))):
        assert fs.loads(fs.dumps([status])) == [status]


def test_older_services_without_public_still_parse() -> None:
    value = fs.to_json_value(_status())
    del value["public"]
    assert fs.from_json_value(value).public == ()


def test_bad_public_in_json_is_rejected() -> None:
    value = fs.to_json_value(_status((ENDPOINT,)))
    value["public"][0]["public_port"] = True
    with pytest.raises(ValidationError) as caught:
        fs.from_json_value(value)
    assert caught.value.field == "public.public_port"
