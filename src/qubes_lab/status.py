"""What `qubes-lab status` shows: namespaces, processes and each agent's last apply."""

from collections.abc import Mapping
from dataclasses import dataclass

from . import netns, processes
from .entry_store import EntryStore
from .state import LabState


@dataclass(frozen=True)
class AgentReport:
    qube: str
    generation: int
    handled: int
    error: str | None


@dataclass(frozen=True)
class LabStatus:
    lab: str
    recorded: bool
    complete: bool
    seconds_to_up: float | None
    namespaces: tuple[tuple[str, bool], ...]
    processes: tuple[tuple[str, int, bool], ...]
    agents: tuple[AgentReport, ...]
    dom0_kept: bool = False  # dom0's state is on disk (the lab may be down)

    @property
    def healthy(self) -> bool:
        return (
            self.complete
            and all(present for _, present in self.namespaces)
            and all(running for _, _, running in self.processes)
        )

    def format(self) -> str:
        if not self.recorded:
            if self.dom0_kept:
                return (
                    f"lab {self.lab}: down, dom0's state kept "
                    "(`up` brings back every forward; `down --purge` deletes it)\n"
                )
            return f"lab {self.lab}: down\n"
        state = "up" if self.healthy else ("degraded" if self.complete else "incomplete")
        took = f" (built in {self.seconds_to_up:.1f} s)" if self.seconds_to_up else ""
        lines = [f"lab {self.lab}: {state}{took}"]
        if not self.healthy:
            lines.append(
                f"  `qubes-lab --lab {self.lab} up` restarts what is gone; dom0's state is kept"
            )
        lines += [f"  netns {name}: {'ok' if ok else 'MISSING'}" for name, ok in self.namespaces]
        lines += [
            f"  process {role} pid {pid}: {'running' if ok else 'GONE'}"
            for role, pid, ok in self.processes
        ]
        for agent in self.agents:
            outcome = "in sync" if agent.handled >= agent.generation else "behind"
            error = f", error: {agent.error}" if agent.error else ""
            lines.append(
                f"  agent {agent.qube}: generation {agent.generation}, "
                f"handled {agent.handled} ({outcome}){error}"
            )
        return "\n".join(lines) + "\n"


def collect_status(
    lab: str, current: LabState | None, stores: Mapping[str, EntryStore], dom0_kept: bool = False
) -> LabStatus:
    if current is None:
        return LabStatus(lab, False, False, None, (), (), (), dom0_kept)
    agents = []
    for qube, store in sorted(stores.items()):
        report = store.read_status()
        agents.append(AgentReport(qube, store.generation(), report.handled, report.error))
    return LabStatus(
        lab=lab,
        recorded=True,
        complete=current.complete,
        seconds_to_up=current.seconds_to_up,
        namespaces=tuple((name, netns.exists(name)) for name in current.namespaces),
        processes=tuple((p.role, p.pid, processes.is_running(p)) for p in current.processes),
        agents=tuple(agents),
        dom0_kept=dom0_kept,
    )
