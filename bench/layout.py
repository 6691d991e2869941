"""The bench's own chain of namespaces, laid out as Qubes does it (pure values).

    lan (client) --eth0 / eth0-- net (edge) --vif3.0 / eth0-- fw --vif6.0 / eth0-- work

/32 addresses with onlink gateways and permanent neighbours on the Qubes side, a /24 on the
LAN side, interface groups 1 (uplink) and 2 (vif) as Qubes' base rules expect.
"""

import ipaddress
from dataclasses import dataclass

IPv4 = ipaddress.IPv4Address

HOSTS = ("lan", "net", "fw", "work")
LAN_PREFIX = 24
LAN_CLIENT = IPv4("192.0.2.10")
EDGE_LAN = IPv4("192.0.2.2")
LAN_NETWORK = ipaddress.IPv4Network("192.0.2.0/24")
NET = IPv4("10.137.0.2")
FW = IPv4("10.137.0.3")
WORK = IPv4("10.137.0.6")
NETVM_MAC = "fe:ff:ff:ff:ff:ff"
FW_MAC = "00:16:3e:5e:6c:03"
WORK_MAC = "00:16:3e:5e:6c:06"
FW_VIF = "vif3.0"  # fw's vif in net
WORK_VIF = "vif6.0"  # work's vif in fw

# Services in work; the forward under test exposes both on the edge under the same numbers.
LATENCY_PORT = 7000
IPERF_PORT = 7001
# socat relays listen on these in net and fw (latency, iperf) and pass on to work's ports.
RELAY_PORT_OFFSET = 100


def netns_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


@dataclass(frozen=True)
class Link:
    """A veth made in `host_a`, its peer moved to `host_b`."""

    host_a: str
    name_a: str
    mac_a: str
    host_b: str
    name_b: str
    mac_b: str

    def command(self, prefix: str) -> str:
        return (
            f"link add {self.name_a} address {self.mac_a} type veth peer name {self.name_b}"
            f" address {self.mac_b} netns {netns_name(prefix, self.host_b)}"
        )


LINKS = (
    Link("lan", "eth0", "02:00:00:00:01:0a", "net", "eth0", "02:00:00:00:01:02"),
    Link("net", FW_VIF, NETVM_MAC, "fw", "eth0", FW_MAC),
    Link("fw", WORK_VIF, NETVM_MAC, "work", "eth0", WORK_MAC),
)


def _vif(netvm: IPv4, vif: str, qube: IPv4, mac: str) -> list[str]:
    return [
        f"link set {vif} group 2 up",
        f"addr add {netvm}/32 dev {vif}",
        f"route add {qube}/32 dev {vif}",
        f"neigh replace {qube} lladdr {mac} dev {vif} nud permanent",
    ]


def _uplink(own: IPv4, gateway: IPv4) -> list[str]:
    return [
        "link set eth0 group 1 up",
        f"addr add {own}/32 dev eth0",
        f"neigh replace {gateway} lladdr {NETVM_MAC} dev eth0 nud permanent",
        f"route add {gateway}/32 dev eth0 scope link",
        f"route add default via {gateway} dev eth0 onlink",
    ]


def ip_commands() -> dict[str, list[str]]:
    """`ip -batch` lines per host, run after every link exists.

    The routes toward work's own address in lan and net exist only for the routed
    comparison: a forward never uses them (it addresses the edge and is DNATed hop by hop).
    """
    return {
        "lan": [
            "link set eth0 up",
            f"addr add {LAN_CLIENT}/{LAN_PREFIX} dev eth0",
            f"route add {WORK}/32 via {EDGE_LAN} dev eth0",
        ],
        "net": [
            "link set eth0 group 1 up",
            f"addr add {EDGE_LAN}/{LAN_PREFIX} dev eth0",
            *_vif(NET, FW_VIF, FW, FW_MAC),
            f"route add {WORK}/32 via {FW} dev {FW_VIF} onlink",
        ],
        "fw": [*_uplink(FW, NET), *_vif(FW, WORK_VIF, WORK, WORK_MAC)],
        "work": _uplink(WORK, FW),
    }


def sysctls() -> dict[str, dict[str, str]]:
    router = {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/conf/all/send_redirects": "0",
        "net/ipv4/conf/default/send_redirects": "0",
    }
    return {
        # Latency runs open tens of thousands of connections: room for their TIME_WAITs.
        "lan": {"net/ipv4/ip_local_port_range": "1024 65000"},
        "net": {**router, f"net/ipv4/conf/{FW_VIF}/proxy_arp": "1"},
        "fw": {**router, f"net/ipv4/conf/{WORK_VIF}/proxy_arp": "1"},
        "work": {},
    }
