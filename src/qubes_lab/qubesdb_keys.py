"""The QubesDB keys dom0 gives a qube at start, as the lab writes them into its entry store."""

from qubes_portfwd.model.topology import DNS_SERVERS4, Qube, Topology

from .layout import has_ipv6_link

NETMASK32 = "255.255.255.255"

FIREWALL_SERVICE_KEY = "/qubes-service/qubes-firewall"  # Qubes' worker runs where it is 1


def _vm_type(qube: Qube) -> str:
    if not qube.provides_network:
        return "AppVM"
    return "NetVM" if qube.netvm is None else "ProxyVM"


UPLINK_ADDRESS_KEY = "/qubes-portfwd-uplink-address4"
NATD_GATEWAY_SERVICE_KEY = "/qubes-service/portfwd-natd-gateway"


def serves_app_qubes(topology: Topology, qube: Qube) -> bool:
    """A network qube with app qubes behind it: where natd answers applications' requests."""
    return qube.provides_network and any(
        not served.provides_network for served in topology.downstream(qube.name)
    )


def static_keys(
    topology: Topology, qube: Qube, uplink_address: str | None = None
) -> dict[str, str]:
    """Identity, addresses, gateway, DNS; in network qubes the firewall service and uplink.

    Behind a netvm that runs natd, the qube is told so: its agent lets the gateway's SSDP
    replies in.

    `uplink_address` is the edge's outside address (DHCP's on a real sys-net): NAT traversal
    tells applications that address.
    """
    keys = {
        "/name": qube.name,
        "/qubes-vm-type": _vm_type(qube),
        "/qubes-primary-dns": str(DNS_SERVERS4[0]),
        "/qubes-secondary-dns": str(DNS_SERVERS4[1]),
    }
    if qube.netvm is not None:
        netvm = topology[qube.netvm]
        keys |= {
            "/qubes-ip": str(qube.address4),
            "/qubes-netmask": NETMASK32,
            "/qubes-gateway": str(netvm.address4),
            "/qubes-mac": f"00:16:3e:5e:6c:{qube.qid & 0xFF:02x}",
        }
        if has_ipv6_link(qube, netvm):
            keys |= {"/qubes-ip6": str(qube.address6), "/qubes-gateway6": str(netvm.address6)}
        if serves_app_qubes(topology, netvm):
            keys[NATD_GATEWAY_SERVICE_KEY] = "1"
    if qube.provides_network:
        keys |= {
            "/qubes-netvm-gateway": str(qube.address4),
            "/qubes-netvm-netmask": NETMASK32,
            "/qubes-netvm-primary-dns": str(DNS_SERVERS4[0]),
            "/qubes-netvm-secondary-dns": str(DNS_SERVERS4[1]),
            FIREWALL_SERVICE_KEY: "1",
            "/qubes-portfwd-uplink": qube.uplink,
        }
        if qube.ipv6_enabled:
            keys["/qubes-netvm-gateway6"] = str(qube.address6)
    if uplink_address is not None:
        keys[UPLINK_ADDRESS_KEY] = uplink_address
    return keys
