"""Publish a plan to the qubes' DBs in DESIGN §3's order (blocking; run in a thread).

Each qube's entries are written (only what changed), then its commit marker; its agent's
handled counter is awaited on a watch of that key (`db.dom0`), bounded.

Removals go outer hops first, additions inner hops first, one depth level at a time, waiting
(bounded) for each level's agents to report the generation they handled. A hop is published
only once every hop inside it is applied, so a failed or silent inner hop never leaves an
outer one open; an outer hop already open stays while the hops inside it are still in force
(their agent busy with a newer generation) or being repaired (their agent putting back rules
its kernel lost: nothing passes meanwhile), and is retracted once one of them fails.
"""

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from ..db.dom0 import Dom0Channel
from ..model.db_layout import OWNED_PREFIXES, Status
from ..model.forward_status import REPAIRING
from ..model.topology import Topology
from ..planner import Plan
from ..ports.qube_db import QubeDb, QubeDbTimeout

APPLIED = "applied"

log = logging.getLogger(__name__)

DbFor = Callable[[str], QubeDb]  # a qube's name -> a handle on its DB (dom0's side)
# Told the entries some qubes are about to get, before a write takes any entry back.
BeforeRetract = Callable[[Mapping[str, Mapping[str, str]]], None]


@dataclass(frozen=True)
class Snapshot:
    """One qube's store as read at one moment: the owned entries and the agent's report."""

    generation: int
    entries: Mapping[str, str]
    status: Status
    public: Mapping[str, str] = field(default_factory=dict)  # a tunnel qube's lease keeper
    # The store's state token, read before the rest: this snapshot is of that state or newer.
    token: object = None

    def in_force(self, key: str) -> bool:
        """Published, and applied (or being put back) in the agent's last report, even if a
        newer generation waits.

        An agent applies each generation as one transaction, so until it reports the new
        one its earlier rules stay in the kernel; rules it is repairing were lost, not refused.
        """
        return key in self.entries and self.status.per_key.get(key) in (APPLIED, REPAIRING)

    def applied(self, key: str, value: str | None = None) -> bool:
        """Applied by the agent in the generation published now (carrying `value`, if given).

        A report of any other generation says nothing of this one: an older one predates
        the entry, a newer one can only come from a store that started over.
        """
        return key in self.applied_keys and (value is None or self.entries[key] == value)

    @functools.cached_property
    def applied_keys(self) -> frozenset[str]:
        """The keys `applied` answers True for (once per snapshot: a level's check and the
        status document ask about every hop of every forward)."""
        if self.status.handled != self.generation:
            return frozenset()
        per_key = self.status.per_key
        return frozenset(k for k in self.entries if per_key.get(k) == APPLIED)


@dataclass
class PublishReport:
    written: dict[str, int] = field(default_factory=dict)
    withheld: dict[str, list[str]] = field(default_factory=dict)
    timed_out: list[str] = field(default_factory=list)
    # Each store's token as the publish last read it: a store whose token is still this one
    # has not changed since (the publish's own writes and the reports on them included).
    tokens: dict[str, object] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        """Nothing left waiting: a later reconcile has nothing to add."""
        return not self.withheld and not self.timed_out


def owned(entries: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in entries.items() if k.startswith(OWNED_PREFIXES)}


def read_snapshot(store: Dom0Channel, token: object = None) -> Snapshot:
    """`token`: the store's token, read just before (so the snapshot is that state or newer)."""
    # The report first: an agent reports a generation only after it was written, so the
    # entries read next are of that generation or newer, never older than the report.
    status = store.read_status()
    generation, entries = store.read_owned(OWNED_PREFIXES)
    return Snapshot(generation, entries, status, store.read_public(), token)


def depth(topology: Topology, qube: str) -> int:
    """How many netvm links lie between `qube` and a netvm-less qube (loops cut short)."""
    hops = 0
    current = topology[qube].netvm
    while current is not None and current in topology and hops <= len(topology.qubes):
        hops += 1
        current = topology[current].netvm
    return hops


def inner_hops(plan: Plan) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """For each (qube, key) of an active forward, the (qube, key) hops inside it."""
    inner: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for forward in plan.forwards:
        if not forward.active:
            continue
        hops = [(hop.qube, hop.key) for hop in forward.hops]
        for position, hop in enumerate(hops):
            inner.setdefault(hop, []).extend(hops[position + 1 :])
    return inner


class Publisher:
    def __init__(self, db_for: DbFor, agent_timeout: float) -> None:
        self.db_for = db_for
        self.agent_timeout = agent_timeout
        self._channels: dict[str, Dom0Channel] = {}
        self._lock = threading.Lock()
        # Snapshots kept while `remembering` (one change: the publish, its status documents),
        # each reused while its store's token is unchanged; none kept at rest (10,000
        # forwards: tens of MB).
        self._remembered: dict[str, Snapshot] | None = None

    def store_for(self, qube: str) -> Dom0Channel:
        """Our protocol over `qube`'s DB; one handle per qube, kept."""
        with self._lock:
            channel = self._channels.get(qube)
            if channel is None:
                channel = self._channels[qube] = Dom0Channel(self.db_for(qube), qube)
            return channel

    def store_tokens(self, qubes: list[str]) -> tuple[object, ...]:
        """Cheap tokens of every qube's commit and report: equal means unchanged."""
        return tuple(self.store_for(q).state_token() for q in qubes)

    def snapshots(self, qubes: list[str]) -> dict[str, Snapshot]:
        return {q: self._snapshot(q) for q in qubes}

    def _snapshot(self, qube: str) -> Snapshot:
        store = self.store_for(qube)
        token = store.state_token()
        remembered = self._remembered
        if remembered is None:
            return read_snapshot(store, token)
        found = remembered.get(qube)
        if found is None or found.token != token:
            found = remembered[qube] = read_snapshot(store, token)
        return found

    @contextlib.contextmanager
    def remembering(self) -> Iterator[None]:
        """Within: a store read again while unchanged is not read again (its token says)."""
        self._remembered = {}
        try:
            yield
        finally:
            self._remembered = None

    def publish(
        self, plan: Plan, topology: Topology, before_retract: BeforeRetract | None = None
    ) -> PublishReport:
        """Publish `plan`; `before_retract` runs before each level's writes that remove or
        change an entry a qube has (so what was shown applied can be shown otherwise first:
        its agent takes the rules out as soon as it sees the write)."""
        report = PublishReport()
        qubes = sorted(topology.qubes)
        snaps = self.snapshots(qubes)
        desired = {q: dict(plan.entries.get(q, {})) for q in qubes}
        levels = sorted({depth(topology, q) for q in qubes})
        by_level = {d: [q for q in qubes if depth(topology, q) == d] for d in levels}

        for level in levels:  # removals: outer (shallow) qubes first
            changed = {}
            for q in by_level[level]:
                kept = {k: v for k, v in snaps[q].entries.items() if k in desired[q]}
                if kept != snaps[q].entries:
                    changed[q] = kept
            snaps.update(
                self._wait(self._write_level(changed, snaps, before_retract, report), report)
            )

        inner = inner_hops(plan)
        for level in reversed(levels):  # additions: inner (deep) qubes first
            changed = {}
            for q in by_level[level]:
                ready = {}
                for key, value in desired[q].items():
                    hops_inside = inner.get((q, key), [])
                    if all(snaps[iq].applied(ik, desired[iq].get(ik)) for iq, ik in hops_inside):
                        ready[key] = value
                    elif snaps[q].entries.get(key) == value and all(
                        snaps[iq].in_force(ik) for iq, ik in hops_inside
                    ):
                        # Unchanged here and still working inside while a slow agent catches
                        # up: retracting it would cut a working forward (and cost the edge a
                        # full re-apply). A failure reported inside still retracts it.
                        ready[key] = value
                    else:
                        report.withheld.setdefault(q, []).append(key)
                if ready != snaps[q].entries:
                    changed[q] = ready
            snaps.update(
                self._wait(self._write_level(changed, snaps, before_retract, report), report)
            )
        report.tokens = {q: snap.token for q, snap in snaps.items()}
        return report

    def _write_level(
        self,
        changed: Mapping[str, dict[str, str]],
        snaps: Mapping[str, Snapshot],
        before_retract: BeforeRetract | None,
        report: PublishReport,
    ) -> dict[str, int]:
        retracting = {
            q: entries
            for q, entries in changed.items()
            if any(entries.get(k) != v for k, v in snaps[q].entries.items())
        }
        if retracting and before_retract is not None:
            before_retract(retracting)
        return {q: self._write(q, entries, report) for q, entries in changed.items()}

    def _write(self, qube: str, entries: dict[str, str], report: PublishReport) -> int:
        generation = self.store_for(qube).replace_prefixes(OWNED_PREFIXES, entries)
        report.written[qube] = generation
        log.info("published %d entries to %s (generation %d)", len(entries), qube, generation)
        return generation

    def _wait(self, written: dict[str, int], report: PublishReport) -> dict[str, Snapshot]:
        """Wait for one level's agents together: the level costs at most one timeout."""
        if not written:
            return {}
        deadline = time.monotonic() + self.agent_timeout
        for qube, generation in written.items():
            try:
                # The report itself is read once, by the snapshot after.
                self.store_for(qube).wait_until_handled(
                    generation, max(0.0, deadline - time.monotonic())
                )
            except QubeDbTimeout:
                report.timed_out.append(qube)
        return self.snapshots(list(written))
