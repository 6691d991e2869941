"""The service's core: state, the one mutation lock, re-planning and publishing.

Every change runs under `lock`: read the current value, validate, write to disk, re-plan,
publish, then write the status document (status_file.py) for the front ends. Two clients
changing rules at once are therefore applied one after the other, each on top of the other's
result. Rules that run out are dropped from their firewall.xml (forwards: their feature) and
unpublished at the instant they expire, without waiting for the periodic reconcile.
"""

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from ..heap import release_freed_heap
from ..model.rule import Rule
from ..model.topology import Topology
from ..planner import Plan, conflicts_for
from ..planner.expiry import next_expiry, qubes_with_expired
from ..planner.incremental import Settled, added_conflicts, replan, settle_all
from ..ports.dom0_host import Dom0Host, NetvmHook
from .errors import QubesValueError
from .nat_state import NatState
from .publisher import Publisher, PublishReport, Snapshot
from .status_file import StatusWriter
from .status_view import StatusTexts

log = logging.getLogger(__name__)

RulesChange = Callable[[tuple[Rule, ...], "Controller"], Sequence[Rule]]
TopologyChange = Callable[[Topology, dict[str, frozenset[str]]], Topology]
AfterCommit = Callable[[Topology, Topology], Awaitable[None]]


def boot_id_reader(path: Path) -> Callable[[], str]:
    """The host's boot id, read on every use so a test can simulate a reboot by rewriting it."""

    def read() -> str:
        return path.read_text().strip()

    return read


class Controller:
    def __init__(
        self,
        state: Dom0Host,
        publisher: Publisher,
        boot_id: Callable[[], str],
        clock: Callable[[], float] = time.time,
        reconcile_interval: float | None = None,
        netvm_hook: NetvmHook | None = None,
        status_file: Path | None = None,
    ) -> None:
        self.state = state
        self.publisher = publisher
        self.boot_id = boot_id
        self.clock = clock
        # None: only events wake the reconciler (`poke`, changes, expiry instants).
        self.reconcile_interval = reconcile_interval
        # What the platform runs after a qube's netvm changed (the lab re-attaches it).
        self.netvm_hook = netvm_hook
        self.nat = NatState.open(state, clock)
        self.status = StatusWriter(status_file) if status_file is not None else None
        # The last plan with what it was made from: a change of one qube's forwards re-plans
        # only them (a whole plan of 10,000 forwards takes ~0.8 s, of 1,000 ~0.14 s).
        self._settled: Settled | None = None
        # Each forward's text in the status document, kept: a change re-encodes only its own.
        self.status_texts = StatusTexts()
        if self.status is not None:
            boot_id = self.boot_id()
            # Front ends read it from the first call on, long before the first publish ends.
            self._write_status_now(self.plan(boot_id=boot_id), boot_id)
        self.lock = asyncio.Lock()
        # Set on every change, so the reconciler re-reads when the next rule expires.
        self._changed = asyncio.Event()
        self._poked = False
        # What the host looked like when a publish last left nothing waiting.
        self._settled_token: object = None

    @property
    def topology(self) -> Topology:
        return self.state.topology

    def plan(self, now: float | None = None, boot_id: str | None = None) -> Plan:
        """What every forward does now: the last plan changed where the rules changed, or a
        whole plan when anything else it was made from changed."""
        now = self.clock() if now is None else now
        boot_id = self.boot_id() if boot_id is None else boot_id
        rules, topology, order = self.state.rules, self.state.topology, self.state.order
        last = self._settled
        settled = None if last is None else replan(last, rules, topology, now, boot_id, order)
        if settled is None:
            settled = settle_all(rules, topology, now, boot_id, order)
        # Each one matches what it was made from, so a race leaves a valid (older) base.
        self._settled = settled
        return settled.plan

    def _conflicts(self, qube: str, rules: list[Rule], now: float, boot_id: str) -> list[str]:
        state, topology = self.state, self.topology
        last = self._settled
        found = None
        if last is not None:
            found = added_conflicts(
                last, qube, rules, state.rules, topology, now, boot_id, state.order
            )
        if found is None:
            found = conflicts_for(qube, rules, state.rules, topology, now, boot_id, state.order)
        return found

    async def snapshots(self) -> dict[str, Snapshot]:
        return await asyncio.to_thread(self.publisher.snapshots, sorted(self.topology.qubes))

    async def _drop_expired_locked(self, now: float, boot_id: str) -> None:
        """Rewrite the firewall.xml of each qube holding expired rules (saving drops them)."""
        for qube in qubes_with_expired(self.state.rules, now, boot_id):
            try:
                rules = self.state.rules_of(qube)
                await asyncio.to_thread(self.state.commit_rules, qube, rules, now, boot_id)
            except Exception:  # the plan ignores them anyway; the next re-plan tries again
                log.exception("dropping expired rules of %s failed", qube)
            else:
                log.info("dropped expired rules of %s", qube)

    def _host_token(self) -> object:
        """What a re-plan depends on besides the rules: boot id, topology, every store's
        commit and report (as tokens)."""
        topology = self.topology
        qubes = sorted(topology.qubes)
        return (self.boot_id(), topology, self.publisher.store_tokens(qubes))

    async def _publish_locked(self) -> PublishReport | None:
        self._settled_token = None
        now, boot_id, topology = self.clock(), self.boot_id(), self.topology
        # In a thread: a whole plan of 10,000 forwards takes a second the socket must not go
        # deaf for.
        current_plan = await asyncio.to_thread(self.plan, now, boot_id)
        with self.publisher.remembering():
            try:
                report = await asyncio.to_thread(
                    self.publisher.publish,
                    current_plan,
                    topology,
                    functools.partial(self._write_status_now, current_plan, boot_id),
                )
            except Exception:  # the change is stored; the next reconcile publishes it again
                log.exception("publishing failed")
                return None
            else:
                if report.settled:
                    # The stores as this publish last read them (its own writes and the
                    # agents' reports on them included): only a change after that counts.
                    tokens = tuple(report.tokens.get(q) for q in sorted(topology.qubes))
                    self._settled_token = (boot_id, topology, tokens)
                return report
            finally:
                # After publishing: the plan already ignores them, and the kernels come first.
                await self._drop_expired_locked(now, boot_id)
                await self._write_status(current_plan, boot_id)
                # A whole plan and the store snapshots of 10,000 forwards leave ~4 MB free
                # but resident.
                await asyncio.to_thread(release_freed_heap)

    async def _write_status(self, current_plan: Plan, boot_id: str) -> None:
        """The status document as of this publish, written before the lock is released, so
        a front end whose change returned already finds it there."""
        await asyncio.to_thread(self._write_status_now, current_plan, boot_id)

    def _write_status_now(
        self,
        current_plan: Plan,
        boot_id: str,
        about_to_publish: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """The document from every store's report; `about_to_publish` (entries by qube, not
        written yet) counts as written, so no hop they take back is still shown applied."""
        if self.status is None:
            return
        try:
            snapshots = self.publisher.snapshots(sorted(self.topology.qubes))
            for qube, entries in (about_to_publish or {}).items():
                snapshots[qube] = dataclasses.replace(snapshots[qube], entries=entries)
            texts = self.status_texts.texts(current_plan, snapshots)
            self.status.write_texts(boot_id, self.topology, texts)
        except Exception:  # the next publish writes it again; the change itself is stored
            log.exception("writing the status document failed")

    async def reconcile(self) -> PublishReport | None:
        async with self.lock:
            return await self._publish_locked()

    def poke(self) -> None:
        """Something a plan reads may have changed (a store, the boot id): look soon.

        Call on the controller's loop; the platform calls it from its own watches."""
        self._poked = True
        self._changed.set()

    def rules_changed(self) -> None:
        """Rules changed outside `change_rules` (the platform read them anew): the reconciler
        looks at their next expiry again, without re-planning for it."""
        self._changed.set()

    async def _reconcile_if_changed(self) -> None:
        """Re-plan unless nothing it reads changed since the last settled publish.

        Re-planning 10,000 forwards costs a second of CPU; nothing can differ from the last
        settled publish unless the boot id, the topology or a store's commit, report or
        public endpoints changed (a few reads of each store). Rule changes and expiry
        instants publish by themselves.
        """
        async with self.lock:
            token = await asyncio.to_thread(self._host_token)
            if token == self._settled_token:
                return
            await self._publish_locked()

    async def change_rules(
        self, qube: str, change: RulesChange, *, skip_unchanged: bool = False
    ) -> None:
        """Replace `qube`'s rules with `change(current)`, all or nothing, then publish.

        With `skip_unchanged`, a change that leaves the rules as they are stores and
        publishes nothing (a feature set twice to the same value).
        """
        async with self.lock:
            now, boot_id = self.clock(), self.boot_id()
            current = self.state.rules_of(qube)
            rules = list(change(current, self))
            if skip_unchanged and tuple(rules) == current:
                return
            conflicts = self._conflicts(qube, rules, now, boot_id)
            if conflicts:
                raise QubesValueError("; ".join(conflicts))
            await asyncio.to_thread(self.state.commit_rules, qube, rules, now, boot_id)
            self._changed.set()
            await self._publish_locked()

    async def change_topology(
        self,
        change: TopologyChange,
        after_commit: AfterCommit | None = None,
        *,
        publish: bool = True,
    ) -> None:
        """Commit `change`; run `after_commit(before, after)` (the platform moving a qube's
        network, as qubesd does within the call); then publish the new plan unless the change
        cannot alter it (`publish=False`)."""
        async with self.lock:
            before = self.topology
            explicit = dict(self.state.explicit)
            topology = change(before, explicit)
            await asyncio.to_thread(self.state.commit_topology, topology, explicit)
            if after_commit is not None:
                await after_commit(before, self.topology)
            if publish:
                await self._publish_locked()

    async def run_reconciler(self) -> None:
        """Re-publish when a rule expires and when poked: agents come back, withheld hops get
        ready, the host reboots (a new boot id ends until-reboot forwards). With a
        `reconcile_interval`, also on that timer (for platforms without watches)."""
        interval = self.reconcile_interval
        next_periodic = None if interval is None else time.monotonic() + interval
        while True:
            self._changed.clear()  # before reading the rules, so no change slips between
            expiry = next_expiry(self.state.rules, self.clock())
            waits = [] if next_periodic is None else [next_periodic - time.monotonic()]
            if expiry is not None:
                waits.append(expiry - self.clock())
            if not self._poked:  # a poke during the last reconcile: look again at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait(), max(0.0, min(waits)) if waits else None
                    )
            poked, self._poked = self._poked, False
            if self._changed.is_set() and not poked:
                continue  # the rules changed: their next expiry may be sooner
            periodic_due = next_periodic is not None and time.monotonic() >= next_periodic
            expiry_due = expiry is not None and self.clock() >= expiry
            if not (poked or periodic_due or expiry_due):
                continue  # the timer fired a hair early
            if periodic_due and interval is not None:
                next_periodic = time.monotonic() + interval
            try:
                if expiry_due:
                    await self.reconcile()
                else:
                    await self._reconcile_if_changed()
            except Exception:
                log.exception("reconcile failed")
