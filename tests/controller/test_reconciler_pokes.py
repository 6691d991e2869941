"""The reconciler never loses a poke: one that arrives while it reconciles makes it look again
(an agent reporting during a publish is how withheld outer hops get published)."""

import asyncio
from pathlib import Path

from qubes_lab.qube_db import FileQubeDb
from qubes_lab.qubesd.state import HostState
from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.controller.publisher import Publisher
from tests.admin_service import small_topology

WAIT = 10.0  # bound of each wait; the test waits for conditions, never for time


def controller(tmp_path: Path) -> Controller:
    state = HostState.open(tmp_path / "state", small_topology())
    publisher = Publisher(lambda qube: FileQubeDb(tmp_path / "qubesdb" / qube), 0.05)
    return Controller(state, publisher, lambda: "boot")


def test_a_poke_during_a_reconcile_is_not_lost(tmp_path: Path) -> None:
    service = controller(tmp_path)
    looks: list[int] = []
    second = asyncio.Event()

    async def reconcile_if_changed() -> None:
        looks.append(len(looks))
        if len(looks) == 1:
            service.poke()  # as a watch would, while this reconcile is under way
        else:
            second.set()

    service._reconcile_if_changed = reconcile_if_changed  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(service.run_reconciler())
        try:
            service.poke()
            await asyncio.wait_for(second.wait(), WAIT)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert looks == [0, 1]
