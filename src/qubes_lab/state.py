"""What a lab made, on disk: `down` removes exactly this, even after `up` crashed halfway.

Intent is recorded before the action (namespaces are listed before they are created),
processes right after they start, so the record is never behind reality.
"""

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .processes import TrackedProcess

RUN_ROOT = Path("/run/qubes-lab")
STATE_FILE = "state.json"
# dom0's state: the admin service's state dir (topology.json, firewall.xml per qube, order).
DOM0_DIR = "admin"
# The topology file the lab was made from: with dom0's state, what the next `up` builds.
TOPOLOGY_FILE = "topology.toml"
BOOT_ID_FILE = "boot_id"
# What `down` keeps unless told to purge, and what a repair that rebuilds the host keeps
# (the same boot: forwards bound to it stay).
KEPT_BY_DOWN = frozenset({DOM0_DIR, TOPOLOGY_FILE})
KEPT_BY_REBUILD = KEPT_BY_DOWN | {BOOT_ID_FILE}


@dataclass(frozen=True)
class LabState:
    lab: str
    topology_text: str = ""
    namespaces: tuple[str, ...] = ()
    processes: tuple[TrackedProcess, ...] = ()
    complete: bool = False
    seconds_to_up: float | None = field(default=None, compare=False)
    # Qubes that run with other properties than the topology file gives them (JSON of
    # admin.topology_json): restarted or re-attached since `up`, or built as dom0 had them.
    # The running host is the topology file with these in place.
    restarted: tuple[dict[str, Any], ...] = ()

    def with_process(self, process: TrackedProcess) -> "LabState":
        return replace(self, processes=(*self.processes, process))

    def without_process(self, process: TrackedProcess) -> "LabState":
        return replace(self, processes=tuple(p for p in self.processes if p != process))

    def with_restarted(self, qube: dict[str, Any]) -> "LabState":
        others = tuple(q for q in self.restarted if q.get("name") != qube.get("name"))
        return replace(self, restarted=(*others, qube))

    def process(self, role: str) -> TrackedProcess | None:
        return next((p for p in self.processes if p.role == role), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "topology_text": self.topology_text,
            "namespaces": list(self.namespaces),
            "processes": [p.to_json() for p in self.processes],
            "complete": self.complete,
            "seconds_to_up": self.seconds_to_up,
            "restarted": list(self.restarted),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> "LabState":
        return cls(
            lab=str(document["lab"]),
            topology_text=str(document.get("topology_text", "")),
            namespaces=tuple(str(n) for n in document.get("namespaces", [])),
            processes=tuple(TrackedProcess.from_json(p) for p in document.get("processes", [])),
            complete=bool(document.get("complete", False)),
            seconds_to_up=document.get("seconds_to_up"),
            restarted=tuple(dict(q) for q in document.get("restarted", [])),
        )


def load(state_dir: Path) -> LabState | None:
    try:
        return LabState.from_json(json.loads((state_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None


def save(state_dir: Path, state: LabState) -> None:
    """Atomic replace, so a crash never leaves half a record."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp_name = tempfile.mkstemp(dir=state_dir, prefix=f".{STATE_FILE}.")
    try:
        with os.fdopen(fd, "w") as temp:
            json.dump(state.to_json(), temp, indent=1)
        os.replace(temp_name, state_dir / STATE_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
