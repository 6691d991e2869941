"""The controller plans the whole host only when it must: at start, and when something other
than one qube's forwards changed (an expiry, the network, the boot)."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_service import BOOT_ID, small_topology
from qubes_lab.entry_store import EntryStore
from qubes_lab.qube_db import FileQubeDb
from qubes_lab.qubesd.state import HostState
from qubes_portfwd.controller import controller as controller_module
from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.controller.errors import QubesValueError
from qubes_portfwd.controller.publisher import Publisher
from qubes_portfwd.model.rule_text import parse_rule

T0 = 1_900_000_000.0
WEB = (
    "action=forward forwardtype=external proto=tcp srcports={port}-{port} dstports=8080-8080 "
    "srchost=192.0.2.0/24 via=sys-firewall,sys-net"
)


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The `now` of every whole plan the controller makes."""
    made: list[float] = []
    real = controller_module.settle_all

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(controller_module, "settle_all", counting)
    yield made


def start(tmp_path: Path, clock: list[float], lines: list[str]) -> tuple[Controller, HostState]:
    state = HostState.open(tmp_path / "state", small_topology())
    rules = [parse_rule(line) for line in lines]
    state.commit_rules("work", rules, clock[0], BOOT_ID)
    publisher = Publisher(lambda qube: FileQubeDb(tmp_path / "qubesdb" / qube), agent_timeout=0.05)
    service = Controller(
        state, publisher, lambda: BOOT_ID, lambda: clock[0], status_file=tmp_path / "status.json"
    )
    return service, state


def forwards_published_to_work(tmp_path: Path) -> int:
    _, entries = EntryStore(tmp_path / "qubesdb" / "work").read()
    return sum(1 for key in entries if key.startswith("/qubes-portfwd/"))


def test_nothing_changed_since_start_means_one_plan(tmp_path: Path, plans: list[float]) -> None:
    clock = [T0]
    service, _ = start(tmp_path, clock, [WEB.format(port=80)])
    clock[0] += 5
    asyncio.run(service.reconcile())
    assert plans == [T0]
    assert forwards_published_to_work(tmp_path) == 1


def test_a_forward_stored_after_start_is_planned_alone(tmp_path: Path, plans: list[float]) -> None:
    clock = [T0]
    service, state = start(tmp_path, clock, [WEB.format(port=80)])
    added = [*state.rules_of("work"), parse_rule(WEB.format(port=81))]
    state.commit_rules("work", added, T0, BOOT_ID)
    asyncio.run(service.reconcile())
    assert plans == [T0]
    assert forwards_published_to_work(tmp_path) == 2


def test_adds_and_removes_through_the_service_plan_alone(
    tmp_path: Path, plans: list[float]
) -> None:
    clock = [T0]
    service, _ = start(tmp_path, clock, [WEB.format(port=80)])
    web81 = parse_rule(WEB.format(port=81))
    asyncio.run(service.change_rules("work", lambda current, _: [*current, web81]))
    assert forwards_published_to_work(tmp_path) == 2
    asyncio.run(service.change_rules("work", lambda current, _: current[:1]))
    assert forwards_published_to_work(tmp_path) == 1
    assert plans == [T0]


def test_a_taken_port_is_refused_without_a_whole_plan(tmp_path: Path, plans: list[float]) -> None:
    clock = [T0]
    service, state = start(tmp_path, clock, [WEB.format(port=80)])
    again = parse_rule(WEB.format(port=80).replace("8080-8080", "22-22"))
    with pytest.raises(QubesValueError, match="tcp/80 on sys-net"):
        asyncio.run(service.change_rules("work", lambda current, _: [*current, again]))
    assert state.rules_of("work") == (parse_rule(WEB.format(port=80)),)
    assert plans == [T0]


def test_a_netvm_change_plans_whole(tmp_path: Path, plans: list[float]) -> None:
    clock = [T0]
    service, state = start(tmp_path, clock, [WEB.format(port=80)])
    moved = state.topology.replace_qube(state.topology["work"].with_changes(netvm="sys-net"))
    state.commit_topology(moved, dict(state.explicit))
    asyncio.run(service.reconcile())
    assert plans == [T0, T0]


def test_a_rule_expired_since_start_is_planned_again(tmp_path: Path, plans: list[float]) -> None:
    clock = [T0]
    expiring = WEB.format(port=82) + f" expire={int(T0) + 10}"
    service, _ = start(tmp_path, clock, [WEB.format(port=80), expiring])
    clock[0] = T0 + 20
    asyncio.run(service.reconcile())
    assert plans == [T0, T0 + 20]
    assert forwards_published_to_work(tmp_path) == 1
