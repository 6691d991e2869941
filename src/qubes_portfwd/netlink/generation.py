"""The nftables ruleset's generation number, asked of the kernel (NFT_MSG_GETGEN).

Every committed transaction advances it by one, so two readings tell how many transactions
went in between, whoever committed them, even while nobody listened to the notifications.
"""

import itertools
import socket

from .events import NETLINK_NETFILTER
from .transactions import generation_of, generation_request

REPLY_TIMEOUT = 1.0  # the kernel answers at once; bounded all the same
READ_SIZE = 1 << 16
_sequence = itertools.count(1)


def ruleset_generation() -> int:
    """The current generation of this namespace's ruleset; OSError if it cannot be read."""
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    ) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.bind((0, 0))
        sock.send(generation_request(next(_sequence) % (1 << 32)))
        generation = generation_of(sock.recv(READ_SIZE))
    if generation is None:
        raise OSError("the kernel's answer to NFT_MSG_GETGEN carries no generation")
    return generation
