"""Qubes' own firewall, for real, beside our agent in a network qube.

In namespaces of our own: Qubes' base rules loaded from core-agent-linux's nft files in both
qubes, the real qubes-firewall worker (`qubesagent/firewall.py`) in the network qube `fwq`,
and our agent (the product's stock composition root, on the `qubesdb` binding) in `fwq` and
in `work` behind it, all on real QubesDB daemons. Dom0's side writes `work`'s outbound rules
in core-admin's `/qubes-firewall/<ip>/` layout and our forward through our dom0 protocol.
Through each side's re-apply and restart: the forward carries real connections from outside,
`work`'s outbound drop still drops, neither table is remade by the other, and Qubes' own
chains stay as Qubes' files made them.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stock_firewall_lab import (
    OUTSIDE_IP,
    UPLINK_IP,
    WAIT,
    WORK_IP,
    Topology,
    connect,
    dom0_db,
    qubes_own,
    server,
    table_handles,
    topology,
    wait_for,
)

from qubes_lab.qubes_firewall.dom0 import FirewallEntriesWriter
from qubes_lab.qubesdb_real import QubeSide, RealQubesDB
from qubes_lab.stock_firewall import QubeProcess, start_worker
from qubes_lab.upstream import UpstreamUnavailable
from qubes_portfwd.db.dom0 import Dom0Channel
from qubes_portfwd.model.db_layout import HANDLED, NO_STATUS, STATUS_APPLIED
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.topology import Qube
from qubes_portfwd.model.topology import Topology as QubesTopology

pytestmark = pytest.mark.lab

BOOT_ID = "0123abcd-0000-4000-8000-000000000000"
HANDLED_PATH = f"/qubes-firewall-handled/{WORK_IP}"
TARGET_PORT, BLOCKED_PORT, OPEN_PORT = 8080, 8001, 8002
FORWARDS = {"a1b2c3d4e5f6": 80, "0f1e2d3c4b5a": 81}  # id: the port fwq forwards to 8080
QUBES = QubesTopology.of(
    Qube("fwq", 2, provides_network=True),
    Qube("work", 5, netvm="fwq"),
)


def entries(forward_ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(fwq's, work's) entries of these forwards from the outside network."""
    fwq, work = {}, {}
    source = f"srchost={OUTSIDE_IP}/32"
    for forward_id in forward_ids:
        key, port = f"/qubes-portfwd/{forward_id}/4", FORWARDS[forward_id]
        fwq[key] = (
            f"role=dnat family=4 proto=tcp in=eth0 ports={port} to={WORK_IP} "
            f"toports={TARGET_PORT} {source}"
        )
        work[key] = f"role=accept family=4 proto=tcp ports={TARGET_PORT} {source}"
    return fwq, work


class Host:
    """Dom0's side of the test: writes both kinds of entries, waits for both answers."""

    def __init__(self, qubesdb: RealQubesDB, lab: Topology, workdir: Path) -> None:
        self.qubesdb, self.lab, self.workdir = qubesdb, lab, workdir
        self.firewall = FirewallEntriesWriter(lambda name: dom0_db(qubesdb, name))
        self.channels = {q: Dom0Channel(dom0_db(qubesdb, q), q) for q in ("fwq", "work")}
        self.watchers = {q: dom0_db(qubesdb, q) for q in ("fwq", "work")}
        self.reader = dom0_db(qubesdb, "fwq")
        self.worker_times: list[float] = []
        self.agent_times: list[float] = []
        for side in (lab.fwq, lab.work):  # what core-admin writes at a qube's start
            db = dom0_db(qubesdb, side.name)
            db.write("/name", side.name.encode())
            db.write("/qubes-ip", str(QUBES[side.name].address4).encode())
        self.reader.write("/connected-ips", str(WORK_IP).encode())

    def worker_handled(self) -> int:
        return int(self.reader.read(HANDLED_PATH) or b"0")

    def set_outbound(self, lines: list[str]) -> None:
        """`work`'s rules as core-admin's reload_firewall_for_vm writes them; the worker's
        handled counter answers."""
        before = self.worker_handled()
        rules = [parse_rule(line) for line in lines]
        started = time.monotonic()
        self.firewall.reload_for_vm(QUBES, lambda _q: rules, "work", time.time(), BOOT_ID)
        self.wait_worker(before)
        self.worker_times.append(time.monotonic() - started)

    def wait_worker(self, above: int) -> None:
        wait_for(
            self.watchers["fwq"],
            HANDLED_PATH,
            lambda: self.worker_handled() > above,
            "the qubes-firewall worker's handled counter",
        )

    def publish(self, forward_ids: list[str]) -> None:
        """Our entries, inner hop (work) first, each waited for as the controller does."""
        fwq, work = entries(forward_ids)
        started = time.monotonic()
        for qube, wanted in (("work", work), ("fwq", fwq)):
            generation = self.channels[qube].replace_prefixes(["/qubes-portfwd/"], wanted)
            self.wait_applied(qube, generation, len(wanted))
        self.agent_times.append(time.monotonic() - started)

    def wait_applied(self, qube: str, generation: int, count: int) -> None:
        channel = self.channels[qube]

        def applied() -> bool:
            status = channel.read_status()
            values = list(status.per_key.values())
            return status.handled >= generation and values == [STATUS_APPLIED] * count

        wait_for(self.watchers[qube], HANDLED, applied, f"{qube}'s agent applying {generation}")


def start_agent(side: QubeSide, workdir: Path) -> QubeProcess:
    """The product's agent as a template's unit runs it (stock root: the qubesdb binding)."""
    argv = [sys.executable, "-m", "qubes_portfwd.agent", "--qube", side.name,
            "--runtime-dir", str(workdir / f"run-{side.name}")]  # fmt: skip
    return QubeProcess.start(side, argv, side.env, workdir / f"agent-{side.name}.log")


@pytest.fixture
def lab(real_qubesdb: RealQubesDB, tmp_path: Path) -> Iterator[Topology]:
    """Not run (with the reason) without core-agent-linux's pinned sources; CI has them."""
    with contextlib.ExitStack() as stack:
        try:
            made = stack.enter_context(topology(real_qubesdb, tmp_path / "hotplug"))
        except UpstreamUnavailable as err:
            pytest.skip(f"Qubes' core-agent-linux not available: {err}")
        yield made


def test_qubes_firewall_worker_and_our_agent_keep_both_rule_sets(
    real_qubesdb: RealQubesDB, lab: Topology, tmp_path: Path
) -> None:
    host = Host(real_qubesdb, lab, tmp_path)
    qubes_made = {ns: qubes_own(ns) for ns in (lab.fwq_ns, lab.work_ns)}
    processes: dict[str, QubeProcess] = {}
    carried = dropped = 0

    def both_in_force(step: str, ports: tuple[int, ...] = (80,)) -> None:
        nonlocal carried, dropped
        for port in ports:
            seen = connect(lab.outside, UPLINK_IP, port)
            assert seen == OUTSIDE_IP, f"{step}: the forward on {port} answered {seen}"
            carried += 1
        assert connect(lab.work_ns, OUTSIDE_IP, BLOCKED_PORT) is None, f"{step}: drop let through"
        dropped += 1
        # The drop is the rule's, not a closed path: the next port of the same server opens.
        assert connect(lab.work_ns, OUTSIDE_IP, OPEN_PORT) == UPLINK_IP, step

    def drop_rules(*extra: str) -> list[str]:
        return [f"action=drop proto=tcp dstports={BLOCKED_PORT}", *extra, "action=accept"]

    try:
        processes["worker"] = start_worker(lab.fwq, tmp_path / "worker.log")
        for side in (lab.fwq, lab.work):
            processes[side.name] = start_agent(side, tmp_path)
        with (
            server(lab.work_ns, TARGET_PORT),
            server(lab.outside, BLOCKED_PORT),
            server(lab.outside, OPEN_PORT),
        ):
            # Until its rules arrive, the worker lets nothing of `work` out.
            assert connect(lab.work_ns, OUTSIDE_IP, OPEN_PORT) is None
            host.set_outbound(drop_rules())
            assert connect(lab.work_ns, OUTSIDE_IP, OPEN_PORT) == UPLINK_IP
            assert connect(lab.work_ns, OUTSIDE_IP, BLOCKED_PORT) is None
            workers = table_handles(lab.fwq_ns, "qubes-firewall")
            host.publish(["a1b2c3d4e5f6"])
            both_in_force("a forward added")
            assert table_handles(lab.fwq_ns, "qubes-firewall") == workers, "an agent remade it"

            ours = table_handles(lab.fwq_ns, "qubes-portfwd")
            host.set_outbound(drop_rules("action=drop proto=udp dstports=9"))
            both_in_force("the worker re-applied")
            assert table_handles(lab.fwq_ns, "qubes-portfwd") == ours, "the worker remade ours"

            host.publish(sorted(FORWARDS))
            both_in_force("our agent re-applied", ports=(80, 81))
            assert table_handles(lab.fwq_ns, "qubes-firewall") == workers, "an agent remade it"

            ours = table_handles(lab.fwq_ns, "qubes-portfwd")
            handled = host.worker_handled()
            assert processes.pop("worker").stop() == 0, "the worker did not exit cleanly"
            assert table_handles(lab.fwq_ns, "qubes-firewall") == [], "its own cleanup"
            processes["worker"] = start_worker(lab.fwq, tmp_path / "worker.log")
            host.wait_worker(handled)  # its first load at start
            both_in_force("the worker restarted", ports=(80, 81))
            assert table_handles(lab.fwq_ns, "qubes-portfwd") == ours, "the worker remade ours"

            workers = table_handles(lab.fwq_ns, "qubes-firewall")
            for name in ("fwq", "work"):
                assert processes.pop(name).stop() == 0, f"{name}'s agent did not exit cleanly"
            # Stopped, our agent leaves nothing of its own, and everything of Qubes'.
            assert table_handles(lab.fwq_ns, "qubes-portfwd") == []
            assert table_handles(lab.fwq_ns, "qubes-firewall") == workers
            assert {ns: qubes_own(ns) for ns in qubes_made} == qubes_made
            assert connect(lab.outside, UPLINK_IP, 80) is None, "a forward outlived its agent"
            for name in ("fwq", "work"):  # and dom0 sees no report: nothing shows applied
                assert host.channels[name].read_status() == NO_STATUS, name
            for side in (lab.fwq, lab.work):
                processes[side.name] = start_agent(side, tmp_path)
            for name in ("work", "fwq"):
                channel = host.channels[name]
                host.wait_applied(name, channel.generation(), len(FORWARDS))
            both_in_force("the agents restarted", ports=(80, 81))
            assert table_handles(lab.fwq_ns, "qubes-firewall") == workers, "an agent remade it"
            # Neither the worker nor our agent wrote Qubes' own chains.
            assert {ns: qubes_own(ns) for ns in qubes_made} == qubes_made
    finally:
        for process in processes.values():
            process.stop()
    print(
        f"\nstock firewall: worker apply s {[round(t, 3) for t in host.worker_times]}, "
        f"agent apply s (work then fwq) {[round(t, 3) for t in host.agent_times]}, "
        f"{carried} forwarded connections, {dropped} outbound connections dropped"
    )


def test_after_an_agent_crash_remove_takes_only_what_is_ours(
    real_qubesdb: RealQubesDB, lab: Topology, tmp_path: Path
) -> None:
    """`qubes-portfwd-agent --remove` (a unit's ExecStopPost, or uninstall) needs no DB."""
    host = Host(real_qubesdb, lab, tmp_path)
    qubes_made = qubes_own(lab.fwq_ns)
    processes = {"worker": start_worker(lab.fwq, tmp_path / "worker.log")}
    remove = [sys.executable, "-m", "qubes_portfwd.agent", "--remove"]
    try:
        for side in (lab.fwq, lab.work):
            processes[side.name] = start_agent(side, tmp_path)
        with server(lab.work_ns, TARGET_PORT), server(lab.outside, OPEN_PORT):
            host.set_outbound(["action=drop proto=tcp dstports=8001", "action=accept"])
            host.publish(["a1b2c3d4e5f6"])
            assert connect(lab.outside, UPLINK_IP, 80) == OUTSIDE_IP
            workers = table_handles(lab.fwq_ns, "qubes-firewall")
            crashed = processes.pop("fwq")
            os.kill(crashed.pid, signal.SIGKILL)
            crashed.launcher.wait(timeout=10)
            assert table_handles(lab.fwq_ns, "qubes-portfwd") != [], "a crash removes nothing"

            for attempt in ("removes", "finds nothing"):
                done = subprocess.run(
                    ["ip", "netns", "exec", lab.fwq_ns, *remove],
                    capture_output=True, text=True, timeout=30,
                )  # fmt: skip
                assert done.returncode == 0, (attempt, done.stderr)
                assert table_handles(lab.fwq_ns, "qubes-portfwd") == [], attempt
                assert table_handles(lab.fwq_ns, "qubes-firewall") == workers, attempt
                assert qubes_own(lab.fwq_ns) == qubes_made, attempt
            assert connect(lab.outside, UPLINK_IP, 80) is None, "the forward outlived --remove"
            assert connect(lab.work_ns, OUTSIDE_IP, OPEN_PORT) == UPLINK_IP
            assert connect(lab.work_ns, OUTSIDE_IP, 8001) is None
    finally:
        for process in processes.values():
            process.stop()


def test_an_agent_whose_qubesdb_went_away_removes_its_rules_and_exits_for_a_restart(
    real_qubesdb: RealQubesDB, lab: Topology, tmp_path: Path
) -> None:
    host = Host(real_qubesdb, lab, tmp_path)
    qubes_made = qubes_own(lab.fwq_ns)
    agent, inner = start_agent(lab.fwq, tmp_path), start_agent(lab.work, tmp_path)
    try:
        with server(lab.work_ns, TARGET_PORT):
            host.publish(["a1b2c3d4e5f6"])
            assert connect(lab.outside, UPLINK_IP, 80) == OUTSIDE_IP
            (daemon,) = [
                pid
                for pid in lab.fwq.sandbox.pids()
                if Path(f"/proc/{pid}/comm").read_text().strip() == "qubesdb-daemon"
            ]
            os.kill(daemon, signal.SIGKILL)
            # Exit 1 (its unit's Restart=on-failure starts it again), nothing of ours left.
            assert agent.launcher.wait(timeout=WAIT) == 1
            assert table_handles(lab.fwq_ns, "qubes-portfwd") == []
            assert qubes_own(lab.fwq_ns) == qubes_made
            assert connect(lab.outside, UPLINK_IP, 80) is None
    finally:
        agent.stop()
        inner.stop()
