"""SSDP discovery on the downstream interfaces only: answer M-SEARCH for the IGD."""

import asyncio
import socket
import struct
from typing import cast

from .upnp_soap import parse_search, search_reply

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
MAX_DATAGRAM = 2048


def multicast_socket(interfaces: list[str]) -> socket.socket:
    """UDP 1900 joined to the SSDP group on each named interface (the vifs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", SSDP_PORT))
    for name in interfaces:
        membership = struct.pack(
            "4s4si",
            socket.inet_aton(SSDP_GROUP),
            socket.inet_aton("0.0.0.0"),
            socket.if_nametoindex(name),
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock


class SsdpResponder(asyncio.DatagramProtocol):
    def __init__(self, location: str, uuid: str) -> None:
        self.location = location
        self.uuid = uuid
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, untrusted_data: bytes, addr: tuple[str | object, ...]) -> None:
        target = parse_search(untrusted_data[:MAX_DATAGRAM])
        if target is None or self.transport is None:
            return
        self.transport.sendto(search_reply(target, self.location, self.uuid), addr)


def downstream_interfaces() -> list[str]:
    """The vif interfaces of this network qube (where its downstream qubes are)."""
    return sorted(name for _, name in socket.if_nameindex() if name.startswith("vif"))
