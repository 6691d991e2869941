"""nftables notifications read: what each message changed, who committed each transaction,
and the ruleset's generation number (pure: messages in, values out).

Each transaction's notifications end with NFT_MSG_NEWGEN, which names the committing task
(NFTA_GEN_PROC_PID: a thread id). A reader that only cares about others' changes drops the
transactions its own threads committed. The messages before it each name a table and an
object (a rule by its chain, elements by their set). NEWGEN also answers NFT_MSG_GETGEN with
the generation, which every committed transaction advances by one.
"""

import struct
from dataclasses import dataclass

MESSAGE_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
NFGENMSG_SIZE = 4  # struct nfgenmsg, before the attributes
ATTRIBUTE_HEADER = struct.Struct("=HH")  # struct nlattr
NFNL_SUBSYS_NFTABLES = 10  # linux/netfilter/nfnetlink.h
# linux/netfilter/nf_tables.h: message types, and per type the attribute naming the object
# (after the table, which is attribute 1 for every one of them).
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_DESTROYTABLE = 0, 2, 26
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN, NFT_MSG_DESTROYCHAIN = 3, 5, 27
NFT_MSG_NEWRULE, NFT_MSG_DELRULE, NFT_MSG_DESTROYRULE = 6, 8, 28
NFT_MSG_NEWSET, NFT_MSG_DELSET, NFT_MSG_DESTROYSET = 9, 11, 29
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_DESTROYSETELEM = 12, 14, 30
NFT_MSG_NEWOBJ, NFT_MSG_DELOBJ, NFT_MSG_DESTROYOBJ = 18, 20, 31
NFT_MSG_NEWFLOWTABLE, NFT_MSG_DELFLOWTABLE, NFT_MSG_DESTROYFLOWTABLE = 22, 24, 32
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
TABLE_MESSAGES = frozenset({NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_DESTROYTABLE})
_NAME_ATTRIBUTE = {
    **dict.fromkeys(TABLE_MESSAGES, 1),  # NFTA_TABLE_NAME
    **dict.fromkeys((NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN, NFT_MSG_DESTROYCHAIN), 3),
    **dict.fromkeys((NFT_MSG_NEWRULE, NFT_MSG_DELRULE, NFT_MSG_DESTROYRULE), 2),
    **dict.fromkeys((NFT_MSG_NEWSET, NFT_MSG_DELSET, NFT_MSG_DESTROYSET), 2),
    **dict.fromkeys((NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_DESTROYSETELEM), 2),
    **dict.fromkeys((NFT_MSG_NEWOBJ, NFT_MSG_DELOBJ, NFT_MSG_DESTROYOBJ), 2),
    **dict.fromkeys((NFT_MSG_NEWFLOWTABLE, NFT_MSG_DELFLOWTABLE, NFT_MSG_DESTROYFLOWTABLE), 2),
}
TABLE_ATTRIBUTE = 1
NEWGEN = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
GETGEN = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
NFTA_GEN_ID = 1
NFTA_GEN_PROC_PID = 2
NLM_F_REQUEST = 1
GENERATIONS = 1 << 32  # the generation is a u32 and wraps
ATTRIBUTE_TYPE = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def aligned(length: int) -> int:
    """A netlink message's or attribute's length rounded up to 4 bytes."""
    return (length + 3) & ~3


def _payload(message: bytes, wanted: int) -> bytes | None:
    """The payload of the message's first top-level attribute of type `wanted`."""
    offset = MESSAGE_HEADER.size + NFGENMSG_SIZE
    while offset + ATTRIBUTE_HEADER.size <= len(message):
        length, kind = ATTRIBUTE_HEADER.unpack_from(message, offset)
        if length < ATTRIBUTE_HEADER.size or offset + length > len(message):
            return None
        if kind & ATTRIBUTE_TYPE == wanted:
            return message[offset + ATTRIBUTE_HEADER.size : offset + length]
        offset += aligned(length)
    return None


def _u32_attribute(message: bytes, wanted: int) -> int | None:
    payload = _payload(message, wanted)
    return int.from_bytes(payload, "big") if payload is not None and len(payload) == 4 else None


def _string_attribute(message: bytes, wanted: int) -> str | None:
    payload = _payload(message, wanted)
    return None if payload is None else payload.split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True, slots=True)
class ObjectChange:
    """One message of a transaction: what kind of change, to which table and object; table
    or name None where the message does not say (or is not an nftables object's)."""

    message: int  # NFT_MSG_*
    family: int  # the nfgenmsg's: NFPROTO_IPV4 2, NFPROTO_IPV6 10, NFPROTO_INET 1
    table: str | None
    name: str | None  # a table's, chain's, set's or object's; a rule's chain; elements' set


@dataclass(frozen=True, slots=True)
class TransactionEnd:
    """NEWGEN: the transaction is complete; its committing task (None: unreadable)."""

    committer: int | None


# What a malformed message reads as: a change to an object nobody can name.
UNREADABLE = ObjectChange(-1, -1, None, None)


def read_notifications(batch: bytes) -> list[ObjectChange | TransactionEnd]:
    """Each message of `batch` (one datagram of notifications) in order; a malformed one
    ends the list as UNREADABLE, then an end by nobody known."""
    read: list[ObjectChange | TransactionEnd] = []
    offset = 0
    while offset < len(batch):
        if offset + MESSAGE_HEADER.size > len(batch):
            return [*read, UNREADABLE, TransactionEnd(None)]
        length, kind, _, _, _ = MESSAGE_HEADER.unpack_from(batch, offset)
        if length < MESSAGE_HEADER.size or offset + length > len(batch):
            return [*read, UNREADABLE, TransactionEnd(None)]
        message = batch[offset : offset + length]
        if kind == NEWGEN:
            read.append(TransactionEnd(_u32_attribute(message, NFTA_GEN_PROC_PID)))
        else:
            read.append(_object_change(kind, message))
        offset += aligned(length)
    return read


def _object_change(kind: int, message: bytes) -> ObjectChange:
    subsystem, message_type = kind >> 8, kind & 0xFF
    family = message[MESSAGE_HEADER.size] if len(message) > MESSAGE_HEADER.size else -1
    name_attribute = _NAME_ATTRIBUTE.get(message_type)
    if subsystem != NFNL_SUBSYS_NFTABLES or name_attribute is None:
        return ObjectChange(message_type, family, None, None)
    return ObjectChange(
        message_type,
        family,
        _string_attribute(message, TABLE_ATTRIBUTE),
        _string_attribute(message, name_attribute),
    )


def committers_of(batch: bytes) -> tuple[int | None, ...]:
    """The committer of each transaction `batch` ends, in order; None where unreadable, and
    a malformed message counts as one of those."""
    return tuple(m.committer for m in read_notifications(batch) if isinstance(m, TransactionEnd))


def generation_request(sequence: int) -> bytes:
    """NFT_MSG_GETGEN: a header and an empty nfgenmsg (any family)."""
    length = MESSAGE_HEADER.size + NFGENMSG_SIZE
    header = MESSAGE_HEADER.pack(length, GETGEN, NLM_F_REQUEST, sequence, 0)
    return header + bytes(NFGENMSG_SIZE)


def generation_of(untrusted_reply: bytes) -> int | None:
    """The generation a GETGEN reply carries; None if the reply is not one."""
    if len(untrusted_reply) < MESSAGE_HEADER.size + NFGENMSG_SIZE:
        return None
    length, kind, _, _, _ = MESSAGE_HEADER.unpack_from(untrusted_reply)
    if kind != NEWGEN or length > len(untrusted_reply):
        return None
    return _u32_attribute(untrusted_reply[:length], NFTA_GEN_ID)


def generations_between(before: int, after: int) -> int:
    """How many transactions were committed from generation `before` to `after`."""
    return (after - before) % GENERATIONS
