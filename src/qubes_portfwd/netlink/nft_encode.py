"""nf_tables messages as bytes: attributes, one batch per transaction, the values of our
set elements and the expressions of our forwards' DNAT rules (pure).

Laid out as `nft --debug=netlink` shows nft 1.0.6 sending them: each field of a concatenated
key padded to 4 bytes, an interval element as its key and its key end, a DNAT with a port
flagged NF_NAT_RANGE_PROTO_SPECIFIED.
"""

import ipaddress
import socket
import struct
from dataclasses import dataclass

from .transactions import MESSAGE_HEADER, NFNL_SUBSYS_NFTABLES, NLM_F_REQUEST, aligned

NLMSG_ERROR = 2
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLA_F_NESTED = 0x8000
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
FAMILIES = {"ip": socket.AF_INET, "ip6": socket.AF_INET6, "inet": 1}  # NFPROTO_*
# linux/netfilter/nf_tables.h
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFT_GOTO = -4
NFT_REG_1, NFT_REG_2 = 1, 2
NFT_META_L4PROTO = 16
NFT_CT_LABELS = 13
NFT_NAT_DNAT = 1
NF_NAT_RANGE_PROTO_SPECIFIED = 0x2
IFNAMSIZ = 16
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
LABEL_BITS = 128


def attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    if length > 0xFFFF:
        raise ValueError("an attribute over 64 KiB")  # the change is too big to go direct
    return struct.pack("=HH", length, kind) + payload + bytes(aligned(length) - length)


def nested(kind: int, *items: bytes) -> bytes:
    return attribute(kind | NLA_F_NESTED, b"".join(items))


def string(kind: int, text: str) -> bytes:
    return attribute(kind, text.encode("ascii") + b"\0")


def u32(kind: int, value: int) -> bytes:
    return attribute(kind, struct.pack(">I", value & 0xFFFFFFFF))


def data_value(kind: int, value: bytes) -> bytes:
    return nested(kind, attribute(NFTA_DATA_VALUE, value))


def goto(kind: int, chain: str) -> bytes:
    verdict = nested(NFTA_DATA_VERDICT, u32(NFTA_VERDICT_CODE, NFT_GOTO), string(2, chain))
    return nested(kind, verdict)


@dataclass(frozen=True)
class Message:
    kind: int  # NFT_MSG_*
    flags: int  # besides NLM_F_REQUEST and NLM_F_ACK
    family: str  # `ip`, `ip6`, `inet`
    attributes: bytes


@dataclass(frozen=True)
class Batch:
    """One transaction's datagram; every message but the batch's ends asks for an answer."""

    data: bytes
    answers: int


def batch(messages: list[Message], first_sequence: int) -> Batch:
    """The messages between BATCH_BEGIN and BATCH_END, numbered from `first_sequence`."""
    sequence = first_sequence
    parts = [_message(NFNL_MSG_BATCH_BEGIN, 0, 0, sequence, b"", NFNL_SUBSYS_NFTABLES)]
    for message in messages:
        sequence += 1
        kind = (NFNL_SUBSYS_NFTABLES << 8) | message.kind
        flags = NLM_F_ACK | message.flags
        parts.append(_message(kind, flags, FAMILIES[message.family], sequence, message.attributes))
    sequence += 1
    parts.append(_message(NFNL_MSG_BATCH_END, 0, 0, sequence, b"", NFNL_SUBSYS_NFTABLES))
    return Batch(b"".join(parts), len(messages))


def _message(kind: int, flags: int, family: int, sequence: int, body: bytes, res: int = 0) -> bytes:
    payload = struct.pack("!BBH", family, 0, res) + body  # nfgenmsg: version 0, res_id
    header = MESSAGE_HEADER.pack(
        MESSAGE_HEADER.size + len(payload), kind, NLM_F_REQUEST | flags, sequence, 0
    )
    return header + payload


def answers_of(untrusted_data: bytes) -> list[tuple[int, int]]:
    """(sequence, error) of each NLMSG_ERROR in a datagram of answers; 0 acknowledges."""
    found = []
    offset = 0
    while offset + MESSAGE_HEADER.size <= len(untrusted_data):
        length, kind, _, sequence, _ = MESSAGE_HEADER.unpack_from(untrusted_data, offset)
        if length < MESSAGE_HEADER.size or offset + length > len(untrusted_data):
            break
        if kind == NLMSG_ERROR and length >= MESSAGE_HEADER.size + 4:
            (error,) = struct.unpack_from("=i", untrusted_data, offset + MESSAGE_HEADER.size)
            found.append((sequence, error))
        offset += aligned(length)
    return found


# -- values of key fields: (start, end) of what one element's field covers ---------------


def field_bytes(kind: str, untrusted_text: str, interval: bool) -> tuple[bytes, bytes]:
    """One key field as the kernel holds it, padded to 4 bytes: its first and last value
    (equal unless an interval set's field is a range or a prefix). ValueError for a type or
    a text not ours."""
    if kind == "ifname":
        name = untrusted_text.removeprefix('"').removesuffix('"').encode("ascii")
        if len(untrusted_text) < 2 or not untrusted_text.startswith('"') or len(name) >= IFNAMSIZ:
            raise ValueError(f"ifname: {untrusted_text!r}")
        value = name.ljust(IFNAMSIZ, b"\0")
        return value, value
    if kind in ("ipv4_addr", "ipv6_addr"):
        network = ipaddress.ip_network(untrusted_text)
        if network.version != (4 if kind == "ipv4_addr" else 6):
            raise ValueError(f"{kind}: {untrusted_text!r}")
        if not interval and network.prefixlen != network.max_prefixlen:
            raise ValueError(f"{kind}: a prefix in a set without intervals")
        return network.network_address.packed, network.broadcast_address.packed
    if kind == "inet_proto":
        value = bytes([PROTOCOLS[untrusted_text]]).ljust(4, b"\0")
        return value, value
    if kind == "inet_service":
        first_text, _, last_text = untrusted_text.partition("-")
        first, last = int(first_text), int(last_text or first_text)
        if not 0 <= first <= last <= 65535 or (first != last and not interval):
            raise ValueError(f"inet_service: {untrusted_text!r}")
        return struct.pack(">H", first) + b"\0\0", struct.pack(">H", last) + b"\0\0"
    raise ValueError(f"no direct form for a key of type {kind}")


def service_value(untrusted_text: str) -> bytes:
    """A map's `inet_service` value: two bytes, network order (not padded)."""
    port = int(untrusted_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"inet_service: {untrusted_text!r}")
    return struct.pack(">H", port)


# -- expressions ---------------------------------------------------------------------------


def expression(name: str, *data: bytes) -> bytes:
    return nested(1, string(1, name), nested(2, *data))  # NFTA_LIST_ELEM: NAME, DATA


def l4proto_is(protocol: int) -> list[bytes]:
    return [
        expression("meta", u32(2, NFT_META_L4PROTO), u32(1, NFT_REG_1)),  # KEY, DREG
        expression("cmp", u32(1, NFT_REG_1), u32(2, 0), data_value(3, bytes([protocol]))),
    ]


def ct_label_set(bit: int) -> list[bytes]:
    if not 0 <= bit < LABEL_BITS:
        raise ValueError(f"ct label: {bit}")
    labels = bytearray(LABEL_BITS // 8)
    labels[bit // 8] |= 1 << (bit % 8)
    return [
        expression("immediate", u32(1, NFT_REG_1), data_value(2, bytes(labels))),
        expression("ct", u32(2, NFT_CT_LABELS), u32(4, NFT_REG_1)),  # KEY, SREG
    ]


def dnat_to(family: int, address: bytes, port: int | None) -> list[bytes]:
    """`dnat ip|ip6 to ADDRESS[:PORT]` (`family`: NFPROTO_IPV4 or NFPROTO_IPV6)."""
    loads = [expression("immediate", u32(1, NFT_REG_1), data_value(2, address))]
    nat = [u32(1, NFT_NAT_DNAT), u32(2, family), u32(3, NFT_REG_1)]  # TYPE, FAMILY, ADDR_MIN
    if port is not None:
        loads.append(
            expression("immediate", u32(1, NFT_REG_2), data_value(2, service_value(str(port))))
        )
        nat += [u32(5, NFT_REG_2), u32(7, NF_NAT_RANGE_PROTO_SPECIFIED)]  # PROTO_MIN, FLAGS
    return [*loads, expression("nat", *nat)]
