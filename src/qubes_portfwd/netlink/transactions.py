"""Who committed the nftables transactions a batch of notifications ends (pure).

Each transaction's notifications end with NFT_MSG_NEWGEN, which names the committing task
(NFTA_GEN_PROC_PID: a thread id). A reader that only cares about others' changes drops the
transactions its own threads committed.
"""

import struct

MESSAGE_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
NFGENMSG_SIZE = 4  # struct nfgenmsg, before the attributes
ATTRIBUTE_HEADER = struct.Struct("=HH")  # struct nlattr
NFNL_SUBSYS_NFTABLES = 10  # linux/netfilter/nfnetlink.h
NFT_MSG_NEWGEN = 15  # linux/netfilter/nf_tables.h
NEWGEN = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
NFTA_GEN_PROC_PID = 2
ATTRIBUTE_TYPE = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def _align(length: int) -> int:
    return (length + 3) & ~3


def _committer(message: bytes) -> int | None:
    offset = MESSAGE_HEADER.size + NFGENMSG_SIZE
    while offset + ATTRIBUTE_HEADER.size <= len(message):
        length, kind = ATTRIBUTE_HEADER.unpack_from(message, offset)
        if length < ATTRIBUTE_HEADER.size or offset + length > len(message):
            return None
        if kind & ATTRIBUTE_TYPE == NFTA_GEN_PROC_PID and length == ATTRIBUTE_HEADER.size + 4:
            return int.from_bytes(message[offset + 4 : offset + 8], "big")
        offset += _align(length)
    return None


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
