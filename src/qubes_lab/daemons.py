"""The lab's long-running processes: dom0's admin service, each qube's agent, each natd, the
DNS responders and the VPN tunnel's ends; each started, stopped and restarted by PID."""

import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from qubes_lab.qubesd.access import qube_socket_path
from qubes_portfwd.client import AdminClient, QubesdError
from qubes_portfwd.model.topology import Topology

from . import admin_launcher, netns, processes, state, vpn
from .entry_store import EntryStore
from .outside import LAN, PROVIDER, OutsideAddresses
from .qube_db import FileQubeDb
from .qubes_firewall.entries import FIREWALL_PREFIX, HANDLED_PREFIX
from .qubes_firewall.nft import FIREWALL_TABLE
from .qubesdb_keys import serves_app_qubes
from .topology_file import LabSpec

NATD_READY_TIMEOUT = 15.0
AGENT_READY_TIMEOUT = 15.0
DNS_READY_TIMEOUT = 5.0
WORKER_READY_TIMEOUT = 15.0
FIREWALL_WORKER = "qubes-firewall"  # the role's kind, as Qubes names the service


def reattach_command(lab: str) -> str:
    """What the admin service runs, with a qube's name added, after that qube's netvm changed.

    On Qubes, qubesd re-attaches a running qube's network itself; the lab does it here.
    """
    argv = [sys.executable, "-m", "qubes_lab", "--lab", lab, "reattach"]
    return shlex.join(argv)


class LabDaemons:
    """Mixed into `Lab`: starting, stopping and restarting the lab's processes."""

    name: str
    state_dir: Path
    admin_socket: Path
    boot_id_file: Path

    @property
    def spec(self) -> LabSpec:
        raise NotImplementedError

    @property
    def addresses(self) -> OutsideAddresses:
        raise NotImplementedError

    def netns(self, host: str) -> str:
        raise NotImplementedError

    def store(self, qube: str) -> EntryStore:
        raise NotImplementedError

    def _require_state(self) -> state.LabState:
        raise NotImplementedError

    def _spawn(self, role: str, host: str, argv: Sequence[str]) -> processes.TrackedProcess:
        raise NotImplementedError

    def dom0_topology(self) -> Topology:
        raise NotImplementedError

    def _forget(self, role: str) -> None:
        """Stop the process of `role` (by its recorded PID) and drop its record."""
        process = self._require_state().process(role)
        if process is not None:
            processes.stop(process)
            state.save(self.state_dir, self._require_state().without_process(process))

    # -- the admin service (dom0's side, on the host) -----------------------------------

    def start_admin(self) -> processes.TrackedProcess:
        log = self.state_dir / "logs" / "admind.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.admin_socket.parent.mkdir(parents=True, exist_ok=True)
        started = admin_launcher.start(
            self.admin_socket,
            self.state_dir / state.DOM0_DIR,
            lab=self.name,
            boot_id_file=self.boot_id_file,
            on_netvm_change=reattach_command(self.name),
            log_path=log,
            # Beside the socket, where the front ends' client looks for it.
            status_file=admin_launcher.status_file_for(self.admin_socket),
        )
        ticks = processes.start_ticks(started.pid)
        if ticks is None:
            raise netns.LabCommandError(f"admin service exited at once; see {log}")
        process = processes.TrackedProcess("admind", "", started.pid, ticks, str(log))
        state.save(self.state_dir, self._require_state().with_process(process))
        return process

    def stop_admin(self) -> None:
        self._forget("admind")

    def restart_admin(self) -> processes.TrackedProcess:
        self.stop_admin()
        return self.start_admin()

    # -- agents ------------------------------------------------------------------------

    def start_agent(self, qube: str) -> processes.TrackedProcess:
        argv = [sys.executable, "-m", "qubes_lab.roots.agent", "--qube", qube]
        argv += ["--store", str(self.store(qube).path), "--runtime-dir", str(self._agent_run(qube))]
        return self._spawn(f"agent:{qube}", qube, argv)

    def _agent_run(self, qube: str) -> Path:
        """The agent's runtime dir: /run inside the qube, so it goes when the qube restarts."""
        return self.state_dir / "run" / f"agent-{qube}"

    def stop_agent(self, qube: str) -> None:
        self._forget(f"agent:{qube}")

    def restart_agent(self, qube: str) -> processes.TrackedProcess:
        self.stop_agent(qube)
        process = self.start_agent(qube)
        self._wait_agents_applied([qube], AGENT_READY_TIMEOUT)
        return process

    def _wait_agents_applied(self, qubes: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for qube in qubes:
            store = self.store(qube)
            remaining = max(0.1, deadline - time.monotonic())
            status = store.wait_for_handled(store.generation(), remaining)
            if status.error:
                raise netns.LabCommandError(f"agent in {qube}: {status.error}")

    # -- Qubes' qubes-firewall worker (in each network qube running that service) --------

    def start_firewall_worker(self, qube: str) -> processes.TrackedProcess:
        """The emulated stock worker; back once it built its tables and counted every source
        present at start as handled."""
        db = FileQubeDb(self.store(qube).path)
        try:
            before = db.multiread(HANDLED_PREFIX)
            argv = [sys.executable, "-m", "qubes_lab.roots.firewall_worker", "--qube", qube]
            process = self._spawn(
                f"{FIREWALL_WORKER}:{qube}", qube, [*argv, "--store", str(db.path)]
            )
            deadline = time.monotonic() + WORKER_READY_TIMEOUT
            while not self._worker_ready(qube, db, before):
                if time.monotonic() > deadline or not processes.is_running(process):
                    raise netns.LabCommandError(
                        f"qubes-firewall in {qube} not ready within {WORKER_READY_TIMEOUT} s"
                    )
                time.sleep(0.05)  # the pause of a bounded wait
        finally:
            db.close()
        return process

    def _worker_ready(self, qube: str, db: FileQubeDb, before: dict[str, bytes]) -> bool:
        targets = {p.split("/")[2] for p in db.list(FIREWALL_PREFIX)}
        counts = db.multiread(HANDLED_PREFIX)
        paths = [f"{HANDLED_PREFIX}{t}" for t in targets]
        if any(counts.get(path) == before.get(path) for path in paths):
            return False
        tables = netns.run_in(self.netns(qube), ["nft", "list", "tables"])
        return f"table ip {FIREWALL_TABLE}" in tables

    def firewall_change(
        self, sources: Mapping[str, Sequence[str] | None], change: Callable[[], object]
    ) -> None:
        """Run `change` (a firewall Set, say), then wait until each netvm's worker handled
        `sources` (None: every qube behind it) once more: every address, not only the first."""
        before = self._handled_counts(sources)
        change()
        self._wait_firewall_handled(self.dom0_topology(), sources, before)

    def _handled_counts(self, netvms: Iterable[str]) -> dict[str, dict[str, bytes]]:
        counts = {}
        for netvm in netvms:
            db = FileQubeDb(self.store(netvm).path)
            try:
                counts[netvm] = db.multiread(HANDLED_PREFIX)
            finally:
                db.close()
        return counts

    def _wait_firewall_handled(
        self,
        topology: Topology,
        sources: Mapping[str, Sequence[str] | None],
        before: Mapping[str, Mapping[str, bytes]],
    ) -> None:
        """Until each netvm's worker counted `sources` (None: every qube behind it) handled
        once more than in `before`; netvms without a worker are not waited for."""
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        for netvm, names in sources.items():
            if self._require_state().process(f"{FIREWALL_WORKER}:{netvm}") is None:
                continue
            qubes = topology.downstream(netvm) if names is None else [topology[n] for n in names]
            paths = [
                f"{HANDLED_PREFIX}{address}"
                for qube in qubes
                for address in (qube.address4, qube.address6)
                if address is not None
            ]
            db = FileQubeDb(self.store(netvm).path)
            try:
                while any(db.read(p) == before[netvm].get(p) for p in paths):
                    if time.monotonic() > deadline:
                        raise netns.LabCommandError(
                            f"qubes-firewall in {netvm} did not handle the new entries "
                            f"within {WORKER_READY_TIMEOUT} s"
                        )
                    time.sleep(0.05)  # the pause of a bounded wait
            finally:
                db.close()

    def reload_qubes_firewall(self, qube: str) -> None:
        """What core-admin does when `qube` starts (`domain-qdb-create`): its outbound
        firewall into its netvm and, for a netvm, its downstream qubes' into it. The lab asks
        its qubesd by the stock `admin.vm.firewall.Reload`; a qubesd not up writes them all
        when it starts."""
        topology = self.dom0_topology()
        sources: dict[str, Sequence[str] | None] = {}
        netvm = topology[qube].netvm
        if netvm is not None:
            sources[netvm] = [qube]
        if topology[qube].provides_network:
            sources[qube] = None
        before = self._handled_counts(sources)
        try:
            AdminClient(self.admin_socket, timeout=60.0).firewall_reload(qube)
        except (OSError, QubesdError):
            return
        self._wait_firewall_handled(topology, sources, before)

    def stop_firewall_worker(self, qube: str) -> None:
        self._forget(f"{FIREWALL_WORKER}:{qube}")

    def restart_firewall_worker(self, qube: str) -> processes.TrackedProcess:
        self.stop_firewall_worker(qube)
        return self.start_firewall_worker(qube)

    # -- NAT traversal (natd in network qubes that serve app qubes) -----------------------

    def natd_ready_file(self, qube: str) -> Path:
        return self.state_dir / "run" / f"natd-{qube}.ready"

    def start_natd(self, qube: str) -> processes.TrackedProcess:
        ready = self.natd_ready_file(qube)
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "qubes_lab.roots.natd", "--qube", qube]
        # Its own socket, as its qrexec channel on Qubes: dom0's socket is for dom0's tools.
        socket_path = qube_socket_path(self.admin_socket, qube)
        argv += ["--store", str(self.store(qube).path), "--socket", str(socket_path)]
        argv += ["--ready", str(ready), "-v"]
        return self._spawn(f"natd:{qube}", qube, argv)

    def stop_natd(self, qube: str) -> None:
        self._forget(f"natd:{qube}")
        self.natd_ready_file(qube).unlink(missing_ok=True)

    def restart_natd(self, qube: str) -> processes.TrackedProcess:
        self.stop_natd(qube)
        process = self.start_natd(qube)
        self.natd_url(qube)
        return process

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

    # -- the outside world's DNS and the VPN tunnel ---------------------------------------

    def start_dns(self, host: str) -> processes.TrackedProcess:
        """The DNS responder of the LAN or of the provider (on its tunnel side)."""
        a = self.addresses
        listen = a.lan_dns4 if host == LAN else a.provider_tunnel4
        ready = self.state_dir / "run" / f"dns-{host}.ready"
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "qubes_lab.dns_responder", "--listen", str(listen)]
        argv += ["--ready", str(ready)]
        for name, records in a.dns_records().items():
            argv += [arg for record in records for arg in ("--record", f"{name}={record}")]
        process = self._spawn(f"dns:{host}", host, argv)
        processes.wait_until(ready.exists, DNS_READY_TIMEOUT, f"DNS responder in {host}")
        return process

    def restart_dns(self, host: str) -> processes.TrackedProcess:
        self._forget(f"dns:{host}")
        return self.start_dns(host)

    def build_tunnels(self, spec: LabSpec, a: OutsideAddresses) -> None:
        """wireguard-go at the provider and in each tunnel qube, keys exchanged, handshakes done."""
        run_dir = self.state_dir / "run"
        provider = vpn.TunnelEnd(self.netns(PROVIDER), "wg0", run_dir / PROVIDER)
        clients = []
        for qube in spec.tunnel_qubes:
            assert qube.netvm is not None  # checked when the topology was loaded
            end = vpn.TunnelEnd(self.netns(qube.name), qube.uplink, run_dir / qube.name)
            gateway = spec.topology[qube.netvm].address4
            clients.append(vpn.TunnelClient(end, a.tunnel_address(qube.name), gateway))
        logs = self.state_dir / "logs"
        for end in [provider, *(c.end for c in clients)]:
            process = vpn.start(end, logs)
            state.save(self.state_dir, self._require_state().with_process(process))
        vpn.configure(provider, clients, a)

    def restart_tunnel(self) -> tuple[processes.TrackedProcess, ...]:
        """Every tunnel end started again and configured anew: one end alone cannot rejoin."""
        for process in self._require_state().processes:
            if process.role.startswith(vpn.ROLE_PREFIX):
                self._forget(process.role)
        self.build_tunnels(self.spec, self.addresses)
        ends = self._require_state().processes
        return tuple(p for p in ends if p.role.startswith(vpn.ROLE_PREFIX))
