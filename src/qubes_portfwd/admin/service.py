"""The service's core: state, the one mutation lock, re-planning and publishing.

Every change runs under `lock`: read the current value, validate, write to disk, re-plan,
publish. Two clients changing rules at once are therefore applied one after the other, each
on top of the other's result.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..model.rule import Rule
from ..model.topology import Topology
from ..planner import Plan, conflicts_for, plan
from .errors import QubesValueError
from .publisher import Publisher, PublishReport, Snapshot
from .state import HostState

log = logging.getLogger(__name__)

RulesChange = Callable[[tuple[Rule, ...], "Service"], Sequence[Rule]]
TopologyChange = Callable[[Topology, dict[str, frozenset[str]]], Topology]


def boot_id_reader(path: Path) -> Callable[[], str]:
    """The host's boot id, read on every use so a test can simulate a reboot by rewriting it."""

    def read() -> str:
        return path.read_text().strip()

    return read


class Service:
    def __init__(
        self,
        state: HostState,
        publisher: Publisher,
        boot_id: Callable[[], str],
        clock: Callable[[], float] = time.time,
        reconcile_interval: float = 5.0,
    ) -> None:
        self.state = state
        self.publisher = publisher
        self.boot_id = boot_id
        self.clock = clock
        self.reconcile_interval = reconcile_interval
        self.lock = asyncio.Lock()

    @property
    def topology(self) -> Topology:
        return self.state.topology

    def plan(self) -> Plan:
        return plan(
            self.state.rules, self.state.topology, self.clock(), self.boot_id(), self.state.order
        )

    async def snapshots(self) -> dict[str, Snapshot]:
        return await asyncio.to_thread(self.publisher.snapshots, sorted(self.topology.qubes))

    async def _publish_locked(self) -> PublishReport | None:
        current_plan = self.plan()
        try:
            return await asyncio.to_thread(self.publisher.publish, current_plan, self.topology)
        except Exception:  # the change is stored; the next reconcile publishes it again
            log.exception("publishing failed")
            return None

    async def reconcile(self) -> PublishReport | None:
        async with self.lock:
            return await self._publish_locked()

    async def change_rules(self, qube: str, change: RulesChange) -> None:
        """Replace `qube`'s rules with `change(current)`, all or nothing, then publish."""
        async with self.lock:
            now, boot_id = self.clock(), self.boot_id()
            rules = list(change(self.state.rules_of(qube), self))
            conflicts = conflicts_for(
                qube, rules, self.state.rules, self.topology, now, boot_id, self.state.order
            )
            if conflicts:
                raise QubesValueError("; ".join(conflicts))
            await asyncio.to_thread(self.state.commit_rules, qube, rules, now, boot_id)
            await self._publish_locked()

    async def change_topology(self, change: TopologyChange) -> None:
        async with self.lock:
            explicit = dict(self.state.explicit)
            topology = change(self.topology, explicit)
            await asyncio.to_thread(self.state.commit_topology, topology, explicit)
            await self._publish_locked()

    async def run_reconciler(self) -> None:
        """Re-publish periodically: rules expire, agents come back, withheld hops get ready."""
        while True:
            await asyncio.sleep(self.reconcile_interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed")
