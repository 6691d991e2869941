"""Dom0's side of Qubes' outbound firewall in the lab: what core-admin does, no more.

`reload_firewall_for_vm` (qubes/vm/mix/net.py): remove `/qubes-firewall/<ip>/` from the
netvm's QubesDB, write the qube's entries, then the bare `/qubes-firewall/<ip>` as the
commit marker. It runs when a qube's accept/drop rules are saved (`firewall-changed`), when
its netvm or addresses change, when a rule runs out (core-admin's expiry timer), at start,
and when a qube (re)starts (`domain-qdb-create`: the lab's restart asks for it through
`admin.vm.firewall.Reload`). Forwards are not Qubes' business: only accept/drop rules go here.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from qubes_portfwd.model.rule import FilterRule, Rule
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.planner.expiry import is_expired
from qubes_portfwd.ports.qube_db import QubeDb

from ..qubesd.state import HostState
from .entries import FIREWALL_PREFIX, IPAddress, base_path, marker_path, qdb_entries

log = logging.getLogger(__name__)

RulesOf = Callable[[str], Sequence[Rule]]


class FirewallEntriesWriter:
    """Writes qubes' entries into their netvms' DBs; one handle per qube, shared by threads."""

    def __init__(self, db_for: Callable[[str], QubeDb]) -> None:
        self._db_for = db_for
        self._dbs: dict[str, QubeDb] = {}
        self._mutex = threading.Lock()

    def db(self, qube: str) -> QubeDb:
        with self._mutex:
            if qube not in self._dbs:
                self._dbs[qube] = self._db_for(qube)
            return self._dbs[qube]

    def reload_for_vm(
        self, topology: Topology, rules_of: RulesOf, qube: str, now: float, boot_id: str
    ) -> None:
        """`qube`'s entries into its netvm's DB, each family's marker last."""
        netvm = topology[qube].netvm
        if netvm is None or netvm not in topology:
            return
        db = self.db(netvm)
        for family in (4, 6):
            address = topology[qube].address(family)
            if address is None:
                continue
            base = base_path(address)
            db.rm(base)
            for name, value in qdb_entries(rules_of(qube), family, now, boot_id).items():
                db.write(base + name, value.encode("ascii"))
            db.write(marker_path(address), b"")

    def forget(self, netvm: str, address: IPAddress) -> None:
        """A source that left `netvm`: its entries and marker go (its traffic meets the
        worker's policy drop)."""
        db = self.db(netvm)
        db.rm(base_path(address))
        db.rm(marker_path(address))

    def reload_netvm(
        self, topology: Topology, rules_of: RulesOf, netvm: str, now: float, boot_id: str
    ) -> None:
        """A network qube's whole `/qubes-firewall/`: its downstream qubes' entries, nothing
        of qubes no longer behind it (at start, and when the netvm itself started)."""
        if netvm not in topology or not topology[netvm].provides_network:
            return
        wanted = {
            str(address)
            for qube in topology.downstream(netvm)
            for address in (qube.address4, qube.address6)
            if address is not None
        }
        db = self.db(netvm)
        present = {p[len(FIREWALL_PREFIX) :].partition("/")[0] for p in db.list(FIREWALL_PREFIX)}
        for stale in sorted(present - wanted):
            db.rm(f"{FIREWALL_PREFIX}{stale}/")
            db.rm(f"{FIREWALL_PREFIX}{stale}")
        for qube in topology.downstream(netvm):
            self.reload_for_vm(topology, rules_of, qube.name, now, boot_id)

    def reload_all(self, topology: Topology, rules_of: RulesOf, now: float, boot_id: str) -> None:
        for netvm in sorted(topology.qubes):
            self.reload_netvm(topology, rules_of, netvm, now, boot_id)

    def after_topology(
        self, before: Topology, after: Topology, rules_of: RulesOf, now: float, boot_id: str
    ) -> None:
        """Qubes whose netvm or addresses changed: gone from the old netvm, written anew."""
        for name in sorted(after.qubes):
            new = after[name]
            old = before.qubes.get(name)
            placed = (new.netvm, new.address4, new.address6)
            if old is not None and (old.netvm, old.address4, old.address6) == placed:
                continue
            if old is not None and old.netvm is not None and old.netvm in after:
                for address in (old.address4, old.address6):
                    if address is not None:
                        self.forget(old.netvm, address)
            self.reload_for_vm(after, rules_of, name, now, boot_id)


def _filters(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    return tuple(r for r in rules if isinstance(r, FilterRule))


class FirewallHostState(HostState):
    """The lab qubesd's state, firing core-admin's reloads after each stored change.

    `writer`, `clock` and `boot_id` are set after `open`; until then nothing is written
    (opening may migrate old forwards into features)."""

    writer: FirewallEntriesWriter | None = None
    clock: Callable[[], float] | None = None
    boot_id: Callable[[], str] | None = None
    on_rules_saved: Callable[[], None] | None = None  # wakes the expiry timer

    def _now(self) -> tuple[float, str]:
        assert self.clock is not None and self.boot_id is not None
        return self.clock(), self.boot_id()

    def commit_rules(self, qube: str, rules: Sequence[Rule], now: float, boot_id: str) -> None:
        before = _filters(self.rules_of(qube))
        super().commit_rules(qube, rules, now, boot_id)
        if self.writer is None or _filters(self.rules_of(qube)) == before:
            return
        self.writer.reload_for_vm(self.topology, self.rules_of, qube, now, boot_id)
        if self.on_rules_saved is not None:
            self.on_rules_saved()

    def commit_topology(self, topology: Topology, explicit: Mapping[str, frozenset[str]]) -> None:
        before = self.topology
        super().commit_topology(topology, explicit)
        if self.writer is not None:
            self.writer.after_topology(before, self.topology, self.rules_of, *self._now())

    def reload_all(self) -> None:
        if self.writer is not None:
            self.writer.reload_all(self.topology, self.rules_of, *self._now())

    def reload_started(self, qube: str) -> None:
        """A qube (re)started: its entries into its netvm, and if it is a netvm, its
        downstream qubes' entries into it (core-admin's `domain-qdb-create`)."""
        if self.writer is None:
            return
        now, boot_id = self._now()
        self.writer.reload_for_vm(self.topology, self.rules_of, qube, now, boot_id)
        self.writer.reload_netvm(self.topology, self.rules_of, qube, now, boot_id)


def next_filter_expiry(rules: Mapping[str, Sequence[Rule]], now: float) -> float | None:
    """The earliest `expire=` of an accept/drop rule after `now` (core-admin's timer)."""
    ahead = [
        r.expire.timestamp
        for listed in rules.values()
        for r in listed
        if isinstance(r, FilterRule) and r.expire is not None and r.expire.timestamp > now
    ]
    return float(min(ahead)) if ahead else None


async def expire_filter_rules(state: FirewallHostState, lock: asyncio.Lock) -> None:
    """Drop accept/drop rules from firewall.xml at the instant they run out; saving them
    rewrites the netvm's entries. Woken by every save, so a new expiry is never missed."""
    loop = asyncio.get_running_loop()
    saved = asyncio.Event()
    state.on_rules_saved = lambda: loop.call_soon_threadsafe(saved.set)
    while True:
        saved.clear()
        now, _ = state._now()
        at = next_filter_expiry(state.rules, now)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(saved.wait(), None if at is None else max(0.0, at - now))
        if saved.is_set():
            continue
        async with lock:
            now, boot_id = state._now()
            for qube in sorted(state.rules):
                if any(
                    isinstance(r, FilterRule) and is_expired(r, now, boot_id)
                    for r in state.rules_of(qube)
                ):
                    try:
                        await asyncio.to_thread(
                            state.commit_rules, qube, state.rules_of(qube), now, boot_id
                        )
                    except Exception:  # the next save or timer tries again
                        log.exception("dropping expired rules of %s failed", qube)
