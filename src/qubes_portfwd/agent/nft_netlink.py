"""Committing an nf_tables batch over netlink from this process (its network namespace).

For the agent's small in-place changes (`netlink/delta_batch.py`): one datagram, the
kernel's answers read back, bounded. A fresh socket each time, so no late answer of an
earlier batch is ever read as this one's.
"""

import os
import socket

from ..netlink.events import NETLINK_NETFILTER
from ..netlink.nft_encode import Message, answers_of, batch
from .nft_port import NftResult

REPLY_TIMEOUT = 5.0  # the kernel answers as soon as it committed or refused
READ_SIZE = 1 << 16
FIRST_SEQUENCE = 1  # a fresh socket per batch: no other answers can share its numbers


class NetlinkBatches:
    """The agent's direct path to nf_tables, beside libnftables."""

    def commit(self, messages: list[Message]) -> NftResult:
        """All of `messages` in one transaction, or (kernel refusal, no answer) none."""
        first = FIRST_SEQUENCE
        encoded = batch(messages, first)
        wanted = set(range(first + 1, first + 1 + encoded.answers))
        last = first + encoded.answers + 1
        try:
            with socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
            ) as sock:
                sock.settimeout(REPLY_TIMEOUT)
                sock.bind((0, 0))
                sock.send(encoded.data)
                while wanted:
                    for sequence, error in answers_of(sock.recv(READ_SIZE)):
                        if error and first <= sequence <= last:  # the batch's ends included
                            text = os.strerror(-error)
                            return NftResult(False, f"netlink: {text} (message {sequence - first})")
                        wanted.discard(sequence)
        except OSError as err:  # a timeout included: the caller loads whole, which settles it
            return NftResult(False, f"netlink: {err}")
        return NftResult(True, "")
