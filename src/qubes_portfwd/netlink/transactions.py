"""Who committed the nftables transactions a batch of notifications ends, and the ruleset's
generation number (pure: messages in, numbers out).

Each transaction's notifications end with NFT_MSG_NEWGEN, which names the committing task
(NFTA_GEN_PROC_PID: a thread id). A reader that only cares about others' changes drops the
transactions its own threads committed. The same message answers NFT_MSG_GETGEN with the
generation, which every committed transaction advances by one.
"""

import struct

MESSAGE_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
NFGENMSG_SIZE = 4  # struct nfgenmsg, before the attributes
ATTRIBUTE_HEADER = struct.Struct("=HH")  # struct nlattr
NFNL_SUBSYS_NFTABLES = 10  # linux/netfilter/nfnetlink.h
NFT_MSG_NEWGEN = 15  # linux/netfilter/nf_tables.h
NFT_MSG_GETGEN = 16
NEWGEN = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
GETGEN = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
NFTA_GEN_ID = 1
NFTA_GEN_PROC_PID = 2
NLM_F_REQUEST = 1
GENERATIONS = 1 << 32  # the generation is a u32 and wraps
ATTRIBUTE_TYPE = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def _align(length: int) -> int:
    return (length + 3) & ~3


def _u32_attribute(message: bytes, wanted: int) -> int | None:
    offset = MESSAGE_HEADER.size + NFGENMSG_SIZE
    while offset + ATTRIBUTE_HEADER.size <= len(message):
        length, kind = ATTRIBUTE_HEADER.unpack_from(message, offset)
        if length < ATTRIBUTE_HEADER.size or offset + length > len(message):
            return None
        if kind & ATTRIBUTE_TYPE == wanted and length == ATTRIBUTE_HEADER.size + 4:
            return int.from_bytes(message[offset + 4 : offset + 8], "big")
        offset += _align(length)
    return None


def _committer(message: bytes) -> int | None:
    return _u32_attribute(message, NFTA_GEN_PROC_PID)


def committers_of(batch: bytes) -> tuple[int | None, ...]:
    """The committer of each transaction `batch` (one datagram of notifications) ends, in
    order; None where unreadable, and a malformed message counts as one of those."""
    committers: list[int | None] = []
    offset = 0
    while offset < len(batch):
        if offset + MESSAGE_HEADER.size > len(batch):
            return (*committers, None)
        length, kind, _, _, _ = MESSAGE_HEADER.unpack_from(batch, offset)
        if length < MESSAGE_HEADER.size or offset + length > len(batch):
            return (*committers, None)
        if kind == NEWGEN:
            committers.append(_committer(batch[offset : offset + length]))
        offset += _align(length)
    return tuple(committers)


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
