"""The lab's long-running services besides the agents: dom0's admin service and each natd."""

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from qubes_portfwd.admin import launcher as admin_launcher
from qubes_portfwd.admin.access import qube_socket_path
from qubes_portfwd.model.topology import Topology

from . import netns, processes, state
from .entry_store import EntryStore
from .qubesdb_keys import serves_app_qubes

NATD_READY_TIMEOUT = 15.0
ADMIN_RECONCILE_INTERVAL = 1.0  # seconds between the admin service's re-plans when idle


def reattach_command(lab: str) -> str:
    """What the admin service runs, with a qube's name added, after that qube's netvm changed.

    On Qubes, qubesd re-attaches a running qube's network itself; the lab does it here.
    """
    argv = [sys.executable, "-m", "qubes_portfwd.lab", "--lab", lab, "reattach"]
    return shlex.join(argv)


class LabDaemons:
    """Mixed into `Lab`: starting and stopping the admin service and the natd processes."""

    name: str
    state_dir: Path
    admin_socket: Path
    boot_id_file: Path

    def store(self, qube: str) -> EntryStore:
        raise NotImplementedError

    def _require_state(self) -> state.LabState:
        raise NotImplementedError

    def _spawn(self, role: str, host: str, argv: Sequence[str]) -> processes.TrackedProcess:
        raise NotImplementedError

    # -- the admin service (dom0's side, on the host) -----------------------------------

    def start_admin(self) -> processes.TrackedProcess:
        log = self.state_dir / "logs" / "admind.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.admin_socket.parent.mkdir(parents=True, exist_ok=True)
        started = admin_launcher.start(
            self.admin_socket,
            self.state_dir / "admin",
            lab=self.name,
            boot_id_file=self.boot_id_file,
            reconcile_interval=ADMIN_RECONCILE_INTERVAL,
            on_netvm_change=reattach_command(self.name),
            log_path=log,
        )
        ticks = processes.start_ticks(started.pid)
        if ticks is None:
            raise netns.LabCommandError(f"admin service exited at once; see {log}")
        process = processes.TrackedProcess("admind", "", started.pid, ticks, str(log))
        state.save(self.state_dir, self._require_state().with_process(process))
        return process

    def stop_admin(self) -> None:
        process = self._require_state().process("admind")
        if process is not None:
            processes.stop(process)
            state.save(self.state_dir, self._require_state().without_process(process))

    def restart_admin(self) -> processes.TrackedProcess:
        self.stop_admin()
        return self.start_admin()

    # -- NAT traversal (natd in network qubes that serve app qubes) -----------------------

    def natd_ready_file(self, qube: str) -> Path:
        return self.state_dir / "run" / f"natd-{qube}.ready"

    def start_natd(self, qube: str) -> processes.TrackedProcess:
        ready = self.natd_ready_file(qube)
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "qubes_portfwd.natd", "--qube", qube]
        # Its own socket, as its qrexec channel on Qubes: dom0's socket is for dom0's tools.
        socket_path = qube_socket_path(self.admin_socket, qube)
        argv += ["--store", str(self.store(qube).path), "--socket", str(socket_path)]
        argv += ["--ready", str(ready), "-v"]
        return self._spawn(f"natd:{qube}", qube, argv)

    def stop_natd(self, qube: str) -> None:
        process = self._require_state().process(f"natd:{qube}")
        if process is not None:
            processes.stop(process)
            state.save(self.state_dir, self._require_state().without_process(process))
        self.natd_ready_file(qube).unlink(missing_ok=True)

    def match_natd(self, topology: Topology, netvm: str) -> None:
        """natd runs in a network qube exactly while it serves app qubes (after a re-attach)."""
        running = self._require_state().process(f"natd:{netvm}")
        if serves_app_qubes(topology, topology[netvm]):
            if running is None:
                self.start_natd(netvm)
        elif running is not None:
            self.stop_natd(netvm)

    def natd_url(self, qube: str, timeout: float = NATD_READY_TIMEOUT) -> str:
        """The UPnP description URL of `qube`'s natd, once it serves."""
        ready = self.natd_ready_file(qube)
        processes.wait_until(ready.exists, timeout, f"natd in {qube}")
        return ready.read_text().strip()
