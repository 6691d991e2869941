"""The lease keeper's loop: follow the qube's entries, hold a provider mapping for each port.

Reads the qube's DB (entries committed by dom0; woken by the marker's watch), asks the
provider gateway by NAT-PMP, renews at half the granted lifetime, follows a changed public
port, releases mappings of removed forwards (lifetime 0) and reports each forward's public
endpoint under `/qubes-portfwd-public/`, where the admin service shows it.
"""

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping

from ..db.qube import QubeChannel
from ..db.watch import next_watch
from ..model.db_layout import MARKER
from ..natpmp import wire
from ..ports.qube_db import QubeDb
from . import leases as book
from .leases import Lease, Map, Unmap
from .natpmp_client import NatPmpClient, NatPmpError
from .wanted import MappingKey, Wanted, wanted_mappings

MAX_IDLE = 1.0  # re-evaluate at least this often: leases run out on their own
RELEASE_TIMEOUT = 10.0  # bound on giving every mapping back at shutdown

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(
        self,
        db: QubeDb,
        client: NatPmpClient,
        requested_lifetime: int = wire.RECOMMENDED_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.store = QubeChannel(db)
        self.client = client
        self.requested_lifetime = requested_lifetime
        self.clock = clock
        self.leases: dict[MappingKey, Lease] = {}
        self.address: ipaddress.IPv4Address | None = None
        self._epoch: tuple[int, float] | None = None
        self._wanted = Wanted({})
        self._published: dict[str, str] | None = None

    def _read_wanted(self) -> Wanted:
        try:
            _, entries = self.store.read()
        except (OSError, ValueError) as err:
            log.warning("cannot read the entries, keeping the last ones: %s", err)
            return self._wanted
        wanted = wanted_mappings(entries)
        for problem in set(wanted.skipped) - set(self._wanted.skipped):
            log.warning("not mapped: %s", problem)
        return wanted

    def _saw_epoch(self, epoch: int) -> None:
        now = self.clock()
        if self._epoch is not None and wire.server_lost_state(*self._epoch, epoch, now):
            log.warning(
                "the gateway's epoch went back (%s -> %s): renewing all", self._epoch[0], epoch
            )
            self.leases = book.renew_all_now(self.leases, now)
        self._epoch = (epoch, now)

    async def _refresh_address(self) -> None:
        try:
            address, epoch = await self.client.external_address()
        except NatPmpError as err:
            log.warning("external address: %s", err)
            return
        if address != self.address:
            log.info("provider's public address: %s", address)
        self.address = address
        self._saw_epoch(epoch)

    async def _map(self, action: Map) -> None:
        key = action.key
        previous = self.leases.get(key)
        request = wire.MappingRequest(
            key.proto, key.port, action.suggested_port, self.requested_lifetime
        )
        try:
            response = await self.client.map(request)
        except NatPmpError as err:
            self.leases[key] = book.failed(key, str(err), self.clock(), previous)
            log.warning("%s: %s", key.text, err)
            return
        self._saw_epoch(response.epoch)
        now = self.clock()
        if response.lifetime == 0 or response.external_port == 0:
            self.leases[key] = book.failed(key, "granted nothing", now, self.leases.get(key))
            return
        if previous is None or previous.public_port != response.external_port:
            old = previous.public_port if previous else None
            log.info(
                "%s: public port %s -> %s for %d s",
                key.text,
                old,
                response.external_port,
                response.lifetime,
            )
        self.leases[key] = book.granted(
            key, response.external_port, response.lifetime, now, previous
        )

    async def _unmap(self, action: Unmap) -> None:
        key = action.key
        self.leases.pop(key, None)  # the provider drops it at expiry even if this is lost
        try:
            await self.client.map(wire.MappingRequest(key.proto, key.port, 0, 0))
        except NatPmpError as err:
            log.warning("%s: release: %s", key.text, err)
            return
        log.info("%s: released", key.text)

    def _publish(self, endpoints: Mapping[str, str]) -> None:
        if dict(endpoints) != self._published:
            self.store.write_public(endpoints)
            self._published = dict(endpoints)

    async def step(self) -> float:
        """Do what is due now; returns the keeper clock's time when the next thing falls due."""
        self._wanted = self._read_wanted()
        wanted = self._wanted.mappings
        actions = book.due_actions(wanted, self.leases, self.clock())
        if any(isinstance(a, Map) for a in actions) or (wanted and self.address is None):
            await self._refresh_address()
        for action in actions:
            if isinstance(action, Unmap):
                await self._unmap(action)
            else:
                await self._map(action)
        now = self.clock()
        self._publish(book.public_entries(wanted, self.leases, self.address, now))
        return book.next_wakeup(wanted, self.leases, now)

    async def run(self, stop: asyncio.Event) -> None:
        """Step, then sleep until dom0 commits, a lease falls due, or `stop` (no polling)."""
        self.store.watch_commits()
        while not stop.is_set():
            due = await self.step()
            wake = min(due, self.clock() + MAX_IDLE)
            while not stop.is_set() and self.clock() < wake:
                fired = await next_watch(self.db, max(0.0, wake - self.clock()), stop)
                if fired == MARKER:
                    break
        await self.release_all()

    async def release_all(self) -> None:
        """Give every mapping back (lifetime 0), bounded: a tunnel qube going down."""
        keys = sorted(self.leases)
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT):
                for key in keys:
                    await self._unmap(Unmap(key))
        except TimeoutError:
            log.warning("release: gave up after %s s", RELEASE_TIMEOUT)
        self.leases.clear()
        self._publish({})
