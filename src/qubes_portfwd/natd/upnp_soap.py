"""UPnP IGD v1 documents and SOAP messages (pure): the device description, parse a control
request safely, format a response or a UPnP error.

Requests are parsed with defusedxml with DTDs, entities and external references forbidden,
after the caller has bounded their size.
"""

from dataclasses import dataclass
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

WANIP_SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"
WANIP2_SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:2"
COMMON_SERVICE = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"
IPV6_FIREWALL_SERVICE = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"
IGD_DEVICE = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
CONTROL_PATH = "/ctl/IPConn"
COMMON_CONTROL_PATH = "/ctl/CmnIfCfg"
IPV6_FIREWALL_CONTROL_PATH = "/ctl/IP6FCtl"
DESCRIPTION_PATH = "/rootDesc.xml"
SEARCH_TARGETS = (
    "ssdp:all",
    "upnp:rootdevice",
    IGD_DEVICE,
    "urn:schemas-upnp-org:device:WANDevice:1",
    "urn:schemas-upnp-org:device:WANConnectionDevice:1",
    WANIP_SERVICE,
)
MAX_ARGUMENTS = 32
MAX_ARGUMENT_LENGTH = 1024


class SoapError(ValueError):
    """A UPnP error to send back: `code` and `description` as UPnP defines them."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description


INVALID_ACTION = 401
INVALID_ARGS = 402
ACTION_FAILED = 501
NOT_AUTHORIZED = 606
ARRAY_INDEX_INVALID = 713
NO_SUCH_ENTRY = 714
WILDCARD_EXTERNAL_PORT = 716
CONFLICT = 718
REMOTE_HOST_WILDCARD_ONLY = 726


@dataclass(frozen=True)
class SoapCall:
    action: str
    arguments: dict[str, str]

    def text(self, name: str) -> str:
        return self.arguments.get(name, "").strip()

    def number(self, name: str, highest: int) -> int:
        value = self.text(name)
        if not (value.isascii() and value.isdigit() and len(value) <= 10) or int(value) > highest:
            raise SoapError(INVALID_ARGS, f"Invalid Args: {name} must be 0-{highest}")
        return int(value)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_call(untrusted_body: bytes) -> SoapCall:
    """The action and its arguments from a SOAP envelope, or SoapError 401/402."""
    try:
        root: Element = safe_xml.fromstring(
            untrusted_body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (DefusedXmlException, SyntaxError, ValueError):
        raise SoapError(
            INVALID_ARGS, "Invalid Args: not a well-formed, entity-free SOAP body"
        ) from None
    if _local(root.tag) != "Envelope":
        raise SoapError(INVALID_ACTION, "Invalid Action: expected a SOAP Envelope")
    body = next((child for child in root if _local(child.tag) == "Body"), None)
    if body is None or len(body) != 1:
        raise SoapError(INVALID_ACTION, "Invalid Action: expected one action in the Body")
    action_element = body[0]
    if len(action_element) > MAX_ARGUMENTS:
        raise SoapError(INVALID_ARGS, "Invalid Args: too many arguments")
    arguments = {}
    for argument in action_element:
        value = argument.text or ""
        if len(value) > MAX_ARGUMENT_LENGTH or len(argument):
            raise SoapError(INVALID_ARGS, f"Invalid Args: {_local(argument.tag)} is malformed")
        arguments[_local(argument.tag)] = value
    return SoapCall(_local(action_element.tag), arguments)


def response_body(action: str, service: str, arguments: dict[str, str | int]) -> bytes:
    inner = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in arguments.items())
    return (
        '<?xml version="1.0"?>\r\n'
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:{action}Response xmlns:u="{service}">{inner}</u:{action}Response>'
        "</s:Body></s:Envelope>\r\n"
    ).encode()


def fault_body(error: SoapError) -> bytes:
    return (
        '<?xml version="1.0"?>\r\n'
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault>'
        "<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
        '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
        f"<errorCode>{error.code}</errorCode>"
        f"<errorDescription>{escape(error.description)}</errorDescription>"
        "</UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n"
    ).encode()


def _service(service_type: str, service_id: str, control: str, scpd: str) -> str:
    return (
        f"<service><serviceType>{service_type}</serviceType><serviceId>{service_id}</serviceId>"
        f"<controlURL>{control}</controlURL><eventSubURL>{control}/evt</eventSubURL>"
        f"<SCPDURL>{scpd}</SCPDURL></service>"
    )


def root_description(base_url: str, uuid: str) -> bytes:
    """IGD v1: InternetGatewayDevice > WANDevice > WANConnectionDevice > WANIPConnection,
    and IGD 2's WANIPv6FirewallControl beside it (upnp_firewall.py says what it answers)."""
    common = _service(
        COMMON_SERVICE, "urn:upnp-org:serviceId:WANCommonIFC1", COMMON_CONTROL_PATH, "/WANCfg.xml"
    )
    wanip = _service(
        WANIP_SERVICE, "urn:upnp-org:serviceId:WANIPConn1", CONTROL_PATH, "/WANIPCn.xml"
    )
    wanip += _service(
        IPV6_FIREWALL_SERVICE,
        "urn:upnp-org:serviceId:WANIPv6FC1",
        IPV6_FIREWALL_CONTROL_PATH,
        "/WANIP6FC.xml",
    )
    return (
        '<?xml version="1.0"?>\r\n<root xmlns="urn:schemas-upnp-org:device-1-0">'
        "<specVersion><major>1</major><minor>0</minor></specVersion>"
        f"<URLBase>{escape(base_url)}</URLBase>"
        f"<device><deviceType>{IGD_DEVICE}</deviceType>"
        "<friendlyName>Qubes network qube</friendlyName><manufacturer>qubes-portfwd</manufacturer>"
        "<modelName>qubes-portfwd-natd</modelName>"
        f"<UDN>uuid:{uuid}-0</UDN><deviceList>"
        "<device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>"
        f"<friendlyName>WAN</friendlyName><UDN>uuid:{uuid}-1</UDN>"
        f"<serviceList>{common}</serviceList><deviceList>"
        "<device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>"
        f"<friendlyName>WAN connection</friendlyName><UDN>uuid:{uuid}-2</UDN>"
        f"<serviceList>{wanip}</serviceList></device>"
        "</deviceList></device></deviceList></device></root>\r\n"
    ).encode()


def search_reply(search_target: str, location: str, uuid: str, max_age: int = 120) -> bytes:
    usn_target = IGD_DEVICE if search_target == "ssdp:all" else search_target
    return (
        "HTTP/1.1 200 OK\r\n"
        f"CACHE-CONTROL: max-age={max_age}\r\n"
        "EXT:\r\n"
        f"LOCATION: {location}\r\n"
        "SERVER: Linux UPnP/1.1 qubes-portfwd-natd/1\r\n"
        f"ST: {usn_target}\r\n"
        f"USN: uuid:{uuid}-0::{usn_target}\r\n"
        "\r\n"
    ).encode()


def parse_search(untrusted_data: bytes) -> str | None:
    """The search target of an SSDP M-SEARCH for something we are, else None."""
    try:
        untrusted_text = untrusted_data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = untrusted_text.split("\r\n")
    if not lines or not lines[0].upper().startswith("M-SEARCH * HTTP/1.1"):
        return None
    headers = {}
    for line in lines[1:]:
        name, has_colon, value = line.partition(":")
        if has_colon:
            headers[name.strip().upper()] = value.strip()
    if headers.get("MAN", "").strip('"') != "ssdp:discover":
        return None
    target = headers.get("ST", "")
    return target if target in SEARCH_TARGETS else None
