"""Ruleset changes as the kernel announces them, on nfnetlink's nftables multicast group.

The agent only needs to know *that* the ruleset changed, not what changed. `nft monitor`
rendered every event as text against its own cache: after a 10,000-forward transaction it
kept writing about 400 MB/s of text to the agent for minutes (70 % of a CPU at rest). The
raw notifications cost nothing to drop: nothing is parsed, one wake-up per burst.
"""

import asyncio
import errno
import socket

NETLINK_NETFILTER = 12  # linux/netlink.h
NFNLGRP_NFTABLES = 7  # linux/netfilter/nfnetlink.h
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
RECEIVE_BUFFER = 1 << 20  # overflow only costs a check: ENOBUFS is reported as a change
READ_SIZE = 1 << 16


class RulesetEvents:
    """Subscribed to this network namespace's nftables notifications until closed."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self._sock.bind((0, 0))
            # Needs CAP_NET_ADMIN in the namespace, like `nft monitor`.
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        except OSError:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "RulesetEvents":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def next_change(self) -> None:
        """Return once something changed since the last call; what is queued is dropped."""
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_recv(self._sock, READ_SIZE)
        except OSError as err:
            if err.errno != errno.ENOBUFS:  # overflowed: changes were lost, which is a change
                raise
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                if not self._sock.recv(READ_SIZE):
                    return
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
