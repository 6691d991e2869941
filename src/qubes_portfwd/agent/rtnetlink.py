"""This namespace's addresses and routes, asked of the kernel over rtnetlink: no `ip` process.

Two read-only requests, each a few microseconds: a dump of the addresses (`ip addr`) and the
kernel's own route lookup for one destination (`ip route get`). The answers are parsed
defensively all the same: anything short or malformed is left out.
"""

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..model.entries import IPAddress
from ..netlink.transactions import aligned

NETLINK_ROUTE = 0  # linux/netlink.h
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 22, 24, 26  # linux/rtnetlink.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF = 1, 4
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0  # what `ip` shows as `scope global`
REPLY_TIMEOUT = 5.0  # the kernel answers at once; this only bounds a read that never ends
READ_SIZE = 1 << 16  # a dump's datagrams are at most 32 KiB
MAX_MESSAGES = 1 << 16  # of one dump: far more addresses than any qube has
MAX_READS = 16  # per route lookup: answers to earlier, abandoned requests are skipped

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src length, tos, table, protocol, scope,
# type, flags
_RTATTR = struct.Struct("=HH")  # length, type
_ERRNO = struct.Struct("=i")
_INDEX = struct.Struct("=I")
_FAMILIES = {socket.AF_INET: 4, socket.AF_INET6: 16}  # address family -> address length


@dataclass(frozen=True)
class Address:
    """One address of an interface, by the interface's index."""

    index: int
    address: IPAddress
    scope: int


@dataclass(frozen=True)
class Route:
    """The kernel's answer for one destination: its route type and output interface."""

    kind: int
    device_index: int | None


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence, payload) of each netlink message in one datagram, up to a bad one."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, sequence, _port = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            return
        yield kind, sequence, data[offset + _HEADER.size : offset + length]
        offset += aligned(length)


def attributes(data: bytes) -> dict[int, bytes]:
    """Route attributes by type (the first of each), up to a malformed one."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            break
        found.setdefault(kind, data[offset + _RTATTR.size : offset + length])
        offset += aligned(length)
    return found


def _ip(family: int, raw: bytes | None) -> IPAddress | None:
    if raw is None or _FAMILIES.get(family) != len(raw):
        return None
    return ipaddress.IPv4Address(raw) if family == socket.AF_INET else ipaddress.IPv6Address(raw)


def parse_address(payload: bytes) -> Address | None:
    """An RTM_NEWADDR body: the local address (`ip` shows IFA_LOCAL, else IFA_ADDRESS)."""
    if len(payload) < _IFADDRMSG.size:
        return None
    family, _prefix, _flags, scope, index = _IFADDRMSG.unpack_from(payload)
    found = attributes(payload[_IFADDRMSG.size :])
    address = _ip(family, found.get(IFA_LOCAL, found.get(IFA_ADDRESS)))
    return None if address is None else Address(index, address, scope)


def parse_route(payload: bytes) -> Route | None:
    """An RTM_NEWROUTE body: its type and output interface (None: no RTA_OIF)."""
    if len(payload) < _RTMSG.size:
        return None
    kind = _RTMSG.unpack_from(payload)[7]
    oif = attributes(payload[_RTMSG.size :]).get(RTA_OIF)
    return Route(kind, _INDEX.unpack(oif)[0] if oif is not None and len(oif) == 4 else None)


def _error(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR (0: an acknowledgement)."""
    return -_ERRNO.unpack_from(payload)[0] if len(payload) >= _ERRNO.size else errno.EPROTO


def device_name(index: int) -> str | None:
    """The interface's name in this namespace; None when it is gone."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


class Rtnetlink:
    """One rtnetlink socket in this network namespace, for a few requests, then closed."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        self._sequence = 0
        try:
            self._sock.settimeout(REPLY_TIMEOUT)
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Rtnetlink":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, kind: int, flags: int, body: bytes) -> int:
        self._sequence += 1
        length = _HEADER.size + len(body)
        self._sock.send(_HEADER.pack(length, kind, NLM_F_REQUEST | flags, self._sequence, 0) + body)
        return self._sequence

    def _read(self) -> bytes:
        data, _, flags, _ = self._sock.recvmsg(READ_SIZE)
        if flags & socket.MSG_TRUNC:
            raise OSError(errno.EMSGSIZE, "an rtnetlink answer did not fit the read")
        return data

    def addresses(self) -> list[Address]:
        """Every address of every interface (OSError when the dump fails)."""
        sequence = self._request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(0, 0, 0, 0, 0))
        found: list[Address] = []
        count = 0
        while True:
            for kind, answered, payload in messages(self._read()):
                if answered != sequence:
                    continue
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    code = _error(payload)
                    raise OSError(code, os.strerror(code))
                count += 1
                if count > MAX_MESSAGES:
                    raise OSError(errno.E2BIG, "more addresses than an agent reads")
                address = parse_address(payload) if kind == RTM_NEWADDR else None
                if address is not None:
                    found.append(address)

    def route_to(self, address: IPAddress) -> Route | None:
        """The kernel's route for `address` (`ip route get`); None when it has none."""
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        raw = address.packed
        attribute = _RTATTR.pack(_RTATTR.size + len(raw), RTA_DST) + raw
        body = _RTMSG.pack(family, len(raw) * 8, 0, 0, 0, 0, 0, 0, 0) + attribute
        sequence = self._request(RTM_GETROUTE, 0, body)
        for _ in range(MAX_READS):
            for kind, answered, payload in messages(self._read()):
                if answered != sequence:
                    continue
                if kind == NLMSG_ERROR:
                    # ENETUNREACH, EHOSTUNREACH, EACCES (prohibit), EINVAL (blackhole)...
                    return None
                return parse_route(payload) if kind == RTM_NEWROUTE else None
        raise OSError(errno.EPROTO, f"no rtnetlink answer for the route to {address}")
