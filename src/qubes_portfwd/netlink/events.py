"""Changes the kernel announces on netlink multicast groups: the ruleset, addresses, routes.

The agent only needs to know *that* something changed, not what, and, for the ruleset,
whether anyone but itself changed it. `nft monitor` rendered every event as text against
its own cache: after a 10,000-forward transaction it kept writing about 400 MB/s of text to
the agent for minutes (70 % of a CPU at rest). The raw notifications cost next to nothing:
only the message headers and each transaction's closing message are read, one wake-up per
burst. With them the agent needs no timer at rest: a lost notification is itself announced
(ENOBUFS).
"""

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Collection, Sequence

from .transactions import ObjectChange, TransactionEnd, read_notifications

NETLINK_ROUTE = 0  # linux/netlink.h
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7  # linux/netfilter/nfnetlink.h
# linux/rtnetlink.h: addresses and routes of both families (a DHCP renewal at the edge, a
# downstream qube's vif route coming back).
RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE = 5, 7
RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE = 9, 11
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
RECEIVE_BUFFER = 1 << 20  # overflow only costs a check: ENOBUFS is reported as a change
READ_SIZE = 1 << 16
LOST = 1 << 30  # the weight of notifications lost (ENOBUFS): heavier than any change


class KernelEvents:
    """Subscribed to `groups` of one netlink protocol in this namespace until closed."""

    def __init__(self, protocol: int, groups: Sequence[int]) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            protocol,
        )
        self._groups = tuple(groups)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self._sock.bind((0, 0))
            self.join()
        except OSError:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def join(self) -> None:
        """Hear the groups (again); OSError if the kernel refuses."""
        for group in self._groups:  # nftables' group needs CAP_NET_ADMIN, like `nft monitor`
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def leave(self) -> None:
        """Hear nothing more until `join`; what is queued stays to be read."""
        for group in self._groups:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, group)

    def __enter__(self) -> "KernelEvents":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def next_change(self) -> int:
        """Once something changed since the last call (what is queued is dropped): 1, or
        LOST if notifications were lost."""
        _, lost = await self._receive()
        return LOST if lost else 1

    async def _receive(self) -> tuple[list[bytes], bool]:
        """Wait for the next datagram, then take what else is queued: the datagrams, and
        whether some were lost (ENOBUFS: the queue overflowed)."""
        loop = asyncio.get_running_loop()
        taken, lost = [], False
        try:
            taken.append(await loop.sock_recv(self._sock, READ_SIZE))
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise
            lost = True
        while True:
            try:
                batch = self._sock.recv(READ_SIZE)
            except BlockingIOError:
                return taken, lost
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            if not batch:
                return taken, lost
            taken.append(batch)


class OthersRulesetEvents(KernelEvents):
    """nftables changes committed by any task for which `ours` is false, weighed.

    Transactions are told apart by their ending NEWGEN message (`transactions.py`); each
    weighs what its heaviest message does by `weigh` (every message 1 by default), and one
    of weight 0 wakes nobody. A lost notification weighs LOST; an unreadable committer
    counts as someone else.
    """

    def __init__(
        self, ours: Callable[[int], bool], weigh: Callable[[ObjectChange], int] | None = None
    ) -> None:
        super().__init__(NETLINK_NETFILTER, (NFNLGRP_NFTABLES,))
        self._ours = ours
        self._weigh = weigh or _every_change
        self._pending = 0  # the transaction under way: its end has not come yet

    async def next_change(self) -> int:
        """The heaviest weight of others' transactions ended since the last call, once > 0."""
        while True:
            batches, lost = await self._receive()
            if lost:  # changes were lost: anyone's, of anything, as far as we know
                self._pending = 0
                return LOST
            heaviest = 0
            for batch in batches:
                for item in read_notifications(batch):
                    if isinstance(item, TransactionEnd):
                        if item.committer is None or not self._ours(item.committer):
                            heaviest = max(heaviest, self._pending)
                        self._pending = 0
                    else:
                        self._pending = max(self._pending, self._weigh(item))
            if heaviest:
                return heaviest


class TableRulesetEvents(KernelEvents):
    """nftables changes in this namespace that may touch the tables named (any family): a
    message naming one or no table, lost notifications, or a burst of more than `at_most`
    messages (parsing a large load message by message costs more than what it spares)."""

    def __init__(self, tables: Collection[str], at_most: int) -> None:
        super().__init__(NETLINK_NETFILTER, (NFNLGRP_NFTABLES,))
        self._tables = frozenset(tables)
        self._at_most = at_most

    async def next_change(self) -> int:
        """1 once such a change came (LOST if notifications were lost); others are dropped."""
        read = 0
        while True:
            batches, lost = await self._receive()
            if lost:
                return LOST
            for batch in batches:
                for item in read_notifications(batch):
                    if isinstance(item, TransactionEnd):
                        continue
                    read += 1
                    if item.table is None or item.table in self._tables or read > self._at_most:
                        return 1


def _every_change(_: ObjectChange) -> int:
    return 1


def ruleset_events() -> KernelEvents:
    """Every nftables change in this namespace (ours, Qubes' reloads, anyone's)."""
    return KernelEvents(NETLINK_NETFILTER, (NFNLGRP_NFTABLES,))


def others_ruleset_events(
    ours: Callable[[int], bool] | None = None, weigh: Callable[[ObjectChange], int] | None = None
) -> OthersRulesetEvents:
    """nftables changes in this namespace not committed by a thread of this process."""
    return OthersRulesetEvents(ours or this_process_task, weigh)


def this_process_task(task_id: int) -> bool:
    """Whether `task_id` (a thread id, as the kernel names a committer) is one of ours."""
    return task_id > 0 and os.path.exists(f"/proc/self/task/{task_id}")


def network_events() -> KernelEvents:
    """Every address and route change in this namespace, both families."""
    groups = (RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE)
    return KernelEvents(NETLINK_ROUTE, groups)
