"""natd's WANIPv6FirewallControl over its real HTTP server on loopback (no root): listed in
the description, the firewall status said, every pinhole action refused with its code."""

import http.client
import re

import pytest

from qubes_portfwd.natd.upnp_soap import (
    DESCRIPTION_PATH,
    IPV6_FIREWALL_CONTROL_PATH,
    IPV6_FIREWALL_SERVICE,
)

from .test_upnp_http import running_server


def soap(port: int, action: str, arguments: str = "") -> tuple[int, str]:
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<s:Body><u:{action} xmlns:u="{IPV6_FIREWALL_SERVICE}">{arguments}</u:{action}>'
        "</s:Body></s:Envelope>"
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            IPV6_FIREWALL_CONTROL_PATH,
            body,
            {
                "Content-Type": 'text/xml; charset="utf-8"',
                "SOAPAction": f'"{IPV6_FIREWALL_SERVICE}#{action}"',
            },
        )
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_the_description_lists_the_service() -> None:
    with running_server() as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", DESCRIPTION_PATH)
        text = connection.getresponse().read().decode()
        connection.close()
    assert f"<serviceType>{IPV6_FIREWALL_SERVICE}</serviceType>" in text
    assert f"<controlURL>{IPV6_FIREWALL_CONTROL_PATH}</controlURL>" in text


def test_firewall_status_enabled_without_inbound_pinholes() -> None:
    with running_server() as port:
        status, body = soap(port, "GetFirewallStatus")
    assert status == 200
    assert "<FirewallEnabled>1</FirewallEnabled>" in body
    assert "<InboundPinholeAllowed>0</InboundPinholeAllowed>" in body
    assert f'xmlns:u="{IPV6_FIREWALL_SERVICE}"' in body


ADD = (
    "<RemoteHost></RemoteHost><RemotePort>0</RemotePort>"
    "<InternalClient>fd09:24ef:4179::a89:6</InternalClient><InternalPort>8080</InternalPort>"
    "<Protocol>6</Protocol><LeaseTime>600</LeaseTime>"
)


@pytest.mark.parametrize(
    ("action", "arguments", "code"),
    [
        ("AddPinhole", ADD, 703),
        ("UpdatePinhole", "<UniqueID>1</UniqueID><NewLeaseTime>600</NewLeaseTime>", 704),
        ("DeletePinhole", "<UniqueID>1</UniqueID>", 704),
        ("CheckPinholeWorking", "<UniqueID>1</UniqueID>", 704),
        ("GetPinholePackets", "<UniqueID>1</UniqueID>", 704),
        ("NoSuchAction", "", 401),
    ],
)
def test_pinhole_actions_are_refused(action: str, arguments: str, code: int) -> None:
    with running_server() as port:
        status, body = soap(port, action, arguments)
    assert status == 500
    found = re.search(r"<errorCode>(\d+)</errorCode>", body)
    assert found is not None and int(found.group(1)) == code, body
