"""The periodic reconcile re-plans only when something it reads has changed."""

import asyncio
from pathlib import Path

from admin_service import BOOT_ID, StandInAgent, small_topology
from qubes_lab.entry_store import EntryStore
from qubes_lab.qube_db import FileQubeDb
from qubes_lab.qubesd.state import HostState
from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.controller.publisher import BeforeRetract, Publisher, PublishReport
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.planner import Plan


class CountingPublisher(Publisher):
    def __init__(self, root: Path, agent_timeout: float = 0.05) -> None:
        super().__init__(lambda qube: FileQubeDb(root / qube), agent_timeout=agent_timeout)
        self.publishes = 0

    def publish(
        self, plan: Plan, topology: Topology, before_retract: BeforeRetract | None = None
    ) -> PublishReport:
        self.publishes += 1
        return super().publish(plan, topology, before_retract)


def test_nothing_changed_means_no_replan_and_any_store_change_means_one(tmp_path: Path) -> None:
    publisher = CountingPublisher(tmp_path / "qubesdb")
    boot_id = [BOOT_ID]
    state = HostState.open(tmp_path / "state", small_topology())
    service = Controller(state, publisher, lambda: boot_id[0])

    def rounds(count: int) -> int:
        before = publisher.publishes
        for _ in range(count):
            asyncio.run(service._reconcile_if_changed())
        return publisher.publishes - before

    # No forwards: the first publish writes nothing (Qubes' firewall entries are not ours),
    # so nothing waits: settled at once. From then on, nothing to do.
    assert rounds(4) == 1
    EntryStore(tmp_path / "qubesdb" / "work").write_status(1, {}, None)  # an agent's report
    assert rounds(3) == 1
    boot_id[0] = "another-boot"
    assert rounds(3) == 1


def test_a_settled_change_is_not_published_again(tmp_path: Path) -> None:
    """The agents' reports on the change's own generations are what that publish waited for:
    only a store change after it makes the next reconcile publish."""
    publisher = CountingPublisher(tmp_path / "qubesdb", agent_timeout=5.0)
    state = HostState.open(tmp_path / "state", small_topology())
    service = Controller(state, publisher, lambda: BOOT_ID)
    stores = {q: EntryStore(tmp_path / "qubesdb" / q) for q in state.topology.qubes}
    web = parse_rule(
        "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
        "srchost=192.0.2.0/24"
    )
    with StandInAgent(stores, lambda qube, key: "applied"):
        asyncio.run(service.change_rules("work", lambda current, _: [*current, web]))
        assert publisher.publishes == 1
        _, work_entries = stores["work"].read()
        assert any(key.startswith("/qubes-portfwd/") for key in work_entries)
        asyncio.run(service._reconcile_if_changed())
        assert publisher.publishes == 1
    generation, entries = stores["work"].read()
    stores["work"].write_status(generation, dict.fromkeys(entries, "applied"), None)  # again
    asyncio.run(service._reconcile_if_changed())
    assert publisher.publishes == 2
