"""Valid inputs the fuzzers start from, one list per target (coverage guidance mutates them)."""

from qubes_portfwd.natd import pcp
from qubes_portfwd.natpmp import wire as natpmp

_V2 = (
    b'<firewall version="2">\n  <rules>\n    <rule>\n      <properties>\n'
    b'        <property name="action">forward</property>\n'
    b'        <property name="forwardtype">external</property>\n'
    b'        <property name="proto">tcp</property>\n'
    b'        <property name="srcports">443</property>\n'
    b'        <property name="srchost">192.0.2.0/24</property>\n'
    b"      </properties>\n    </rule>\n    <rule>\n      <properties>\n"
    b'        <property name="action">accept</property>\n'
    b'        <property name="comment">web</property>\n'
    b'        <property name="dsthost">qubes-os.org</property>\n'
    b'        <property name="proto">tcp</property>\n'
    b'        <property name="dstports">80-443</property>\n'
    b"      </properties>\n    </rule>\n  </rules>\n</firewall>\n"
)
_V1 = (
    b'<QubesFirewallRules policy="deny" dns="allow" icmp="allow">'
    b'<rule address="192.0.2.1" netmask="24" proto="tcp" port="80" toport="90" expire="5"/>'
    b"</QubesFirewallRules>"
)
_SOAP = (
    b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    b'<s:Body><u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
    b"<NewRemoteHost></NewRemoteHost><NewExternalPort>8080</NewExternalPort>"
    b"<NewProtocol>TCP</NewProtocol><NewInternalPort>80</NewInternalPort>"
    b"<NewInternalClient>10.137.0.20</NewInternalClient><NewEnabled>1</NewEnabled>"
    b"<NewPortMappingDescription>web</NewPortMappingDescription>"
    b"<NewLeaseDuration>3600</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>"
)


def _http_post(body: bytes) -> bytes:
    head = (
        "POST /ctl/IPConn HTTP/1.1\r\nHost: 10.137.0.5:5000\r\n"
        'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"\r\n'
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_PCP_MAP = pcp.encode_map_request(
    pcp.PcpRequest(
        pcp.Opcode.MAP,
        3600,
        pcp.unmap(bytes(10) + b"\xff\xff" + bytes((10, 137, 0, 20))),
        pcp.MapRequest(bytes(12), 6, 80, 8080, pcp.unmap(bytes(16)), None, True),
    )
)

SEEDS: dict[str, list[bytes]] = {
    "rule_text": [
        b"action=forward forwardtype=external proto=tcp srcports=443 srchost=192.0.2.0/24",
        b"action=forward forwardtype=internal srcports=80-81 dstports=8080-8081 "
        b"srchost=work,personal via=sys-firewall,sys-net expire=boot:ab-12 comment=a b",
        b"action=accept dst4=10.0.0.0/8 proto=udp dstports=53-53 comment=dns",
        b"action=drop dsthost=example.com proto=icmp icmptype=8 expire=1700000000",
        b"action=accept specialtarget=dns\naction=drop\n",
    ],
    "firewall_xml": [_V2, _V1, b'<firewall version="2"><rules/></firewall>'],
    "admin_wire": [
        b"admin.vm.firewall.Set+ dom0 name work\0action=accept\n",
        b"admin.vm.portfwd.Remove+0123456789ab dom0 keyword adminvm\0",
        b"admin.vm.List+ dom0 name dom0\0",
    ],
    "hop_entry": [
        b"/qubes-portfwd/0123456789ab/4\nrole=dnat family=4 proto=tcp,udp in=eth0 "
        b"ports=443-443 to=10.137.0.6 toports=8443-8443 srchost=192.0.2.0/24",
        b"/qubes-portfwd/0123456789ab/6\nrole=accept family=6 proto=udp ports=53-54 "
        b"srchost=2001:db8::/32,fd00::1",
    ],
    "firewall_entry": [
        b"10.137.0.6\npolicy=drop\n0000=action=accept dst4=10.0.0.0/8 proto=tcp dstports=80-80"
        b"\n0001=action=accept dsthost=example.com",
        b"fd09:24ef:4179::a89:6\npolicy=accept",
    ],
    "agent_entries": [
        b"p0123456789ab/4 role=accept family=4 proto=tcp ports=22-22 srchost=10.137.0.7\n"
        b"f10.137.0.7/policy drop\nf10.137.0.7/0000 action=accept proto=icmp",
    ],
    "natpmp": [
        natpmp.encode_request(natpmp.ExternalAddressRequest()),
        natpmp.encode_request(natpmp.MappingRequest("tcp", 80, 8080, 3600)),
        natpmp.encode_response(natpmp.MappingResponse("udp", 9, 80, 8080, 3600)),
        natpmp.encode_response(natpmp.ErrorResponse(2, 2, 9)),
    ],
    "nat_request": [
        b"client=10.137.0.20 proto=tcp internal-port=80 external-port=8080 lifetime=3600 "
        b"origin=UPnP wait=5 exact=1 description=my web server",
        b"client=fd09::6 proto=udp internal-port=0 external-port=0 lifetime=0 origin=PCP",
    ],
    "port_control": [
        natpmp.encode_request(natpmp.ExternalAddressRequest()),
        natpmp.encode_request(natpmp.MappingRequest("udp", 80, 8080, 3600)),
        natpmp.encode_request(natpmp.MappingRequest("tcp", 80, 0, 0)),
        _PCP_MAP,
    ],
    "pcp": [
        _PCP_MAP,
        _PCP_MAP + bytes((1, 0, 0, 16)) + bytes(16),
        pcp.encode_response(pcp.Opcode.ANNOUNCE, 0, 0, 0)[:1] + bytes(23),
    ],
    "upnp_http": [
        _http_post(_SOAP),
        b"GET /rootDesc.xml HTTP/1.1\r\nHost: x\r\n\r\n",
        _http_post(_SOAP.replace(b"AddPortMapping", b"GetGenericPortMappingEntry")),
    ],
    "upnp_soap": [
        _SOAP,
        b'M-SEARCH * HTTP/1.1\r\nMAN: "ssdp:discover"\r\nST: ssdp:all\r\n\r\n',
    ],
}
