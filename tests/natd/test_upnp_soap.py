"""SOAP and SSDP parsing: the forms clients send, and hostile documents."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.natd import upnp_soap

ENVELOPE = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    '<s:Body><u:{action} xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
    "{args}</u:{action}></s:Body></s:Envelope>"
)


def envelope(action: str, **args: str) -> bytes:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in args.items())
    return ENVELOPE.format(action=action, args=inner).encode()


def test_parses_an_action_and_its_arguments() -> None:
    call = upnp_soap.parse_call(
        envelope("AddPortMapping", NewExternalPort="80", NewProtocol="TCP", NewRemoteHost="")
    )
    assert call.action == "AddPortMapping"
    assert call.number("NewExternalPort", 65535) == 80
    assert call.text("NewProtocol") == "TCP" and call.text("NewRemoteHost") == ""
    with pytest.raises(upnp_soap.SoapError) as refused:
        call.number("NewProtocol", 65535)
    assert refused.value.code == upnp_soap.INVALID_ARGS


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY l2 '&lol;&lol;'>]>"
        b"<lolz>&l2;</lolz>",
        b"<Envelope><Body/></Envelope>",
        b"<Envelope><Body><A/><B/></Body></Envelope>",
        envelope("AddPortMapping", NewExternalPort="1" * 2000),
    ],
)
def test_hostile_bodies_are_upnp_errors(body: bytes) -> None:
    with pytest.raises(upnp_soap.SoapError) as refused:
        upnp_soap.parse_call(body)
    assert refused.value.code in (upnp_soap.INVALID_ACTION, upnp_soap.INVALID_ARGS)


@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_a_soap_error(data: bytes) -> None:
    with contextlib.suppress(upnp_soap.SoapError):
        upnp_soap.parse_call(data)


def test_responses_escape_their_values() -> None:
    body = upnp_soap.response_body("X", upnp_soap.WANIP_SERVICE, {"NewDesc": "<a&b>"})
    assert b"&lt;a&amp;b&gt;" in body
    fault = upnp_soap.fault_body(upnp_soap.SoapError(718, "ConflictInMappingEntry"))
    assert b"<errorCode>718</errorCode>" in fault


def test_ssdp_search_for_the_gateway_only() -> None:
    search = (
        b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
        b"MX: 2\r\nST: %s\r\n\r\n"
    )
    assert upnp_soap.parse_search(search % upnp_soap.IGD_DEVICE.encode()) == upnp_soap.IGD_DEVICE
    assert upnp_soap.parse_search(search % b"urn:schemas-upnp-org:device:MediaServer:1") is None
    assert upnp_soap.parse_search(b"NOTIFY * HTTP/1.1\r\n\r\n") is None
    assert upnp_soap.parse_search(b"\xff\xfe") is None
    reply = upnp_soap.search_reply("ssdp:all", "http://10.137.0.3:2869/rootDesc.xml", "u")
    assert b"LOCATION: http://10.137.0.3:2869/rootDesc.xml\r\n" in reply
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n")


def test_root_description_names_the_control_url() -> None:
    description = upnp_soap.root_description("http://10.137.0.3:2869/", "abc")
    assert upnp_soap.WANIP_SERVICE.encode() in description
    assert b"<controlURL>/ctl/IPConn</controlURL>" in description
