"""The `Lab`: build, inspect and tear down an emulated Qubes host made of namespaces."""

import contextlib
import dataclasses
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qubes_lab.qubes_base import base_ruleset
from qubes_lab.qubesd.access import qube_socket_path
from qubes_lab.qubesd.topology_json import qube_from_json, qube_to_json
from qubes_portfwd.defaults import DEFAULT_SOCKET
from qubes_portfwd.model.entries import FORWARD_PREFIX
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import Topology

from . import dom0_state, host_lock, netns, processes, reattach, recovery, state, vpn
from .daemons import AGENT_READY_TIMEOUT, LabDaemons
from .entry_store import EntryStore
from .layout import NamespaceSetup, netns_name, qube_veths
from .outside import (
    LAN,
    OUTSIDE_HOSTS,
    PROVIDER,
    OutsideAddresses,
    outside_addresses,
    outside_setups,
    outside_veths,
    provider_nat_ruleset,
)
from .qube_db import FileQubeDb
from .qubes_firewall.dom0 import FirewallEntriesWriter
from .qubes_firewall.entries import FIREWALL_PREFIX
from .qubes_firewall.nft import FIREWALL_TABLE as WORKER_TABLE
from .qubesd.state import DEFAULT_RULES
from .qubesdb_keys import FIREWALL_SERVICE_KEY, serves_app_qubes, static_keys
from .restart import apply_network, base_params, full_setup, plan_restart
from .status import LabStatus, collect_status
from .topology_file import LabSpec, load_lab_spec, load_lab_spec_text

_LAB_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,15}\Z")
RUN_TIMEOUT = 60.0
_PUBLISHED = (FORWARD_PREFIX, FIREWALL_PREFIX)  # keys dom0's admin service owns in a store
TOPOLOGY_LOCK_TIMEOUT = 120.0  # a restart or re-attach of another process may be under way


class LabNotUp(RuntimeError):
    """The lab has no state: run `up` first."""


def check_lab_name(untrusted_name: str) -> str:
    if not _LAB_NAME.match(untrusted_name):
        raise ValidationError(
            "lab", "expected 1-16 of a-z, 0-9 and -, starting with a letter/digit"
        )
    return untrusted_name


class Lab(LabDaemons):
    """One emulated Qubes host; every namespace it makes is `qlab-<name>-<host>`."""

    def __init__(self, name: str = "default", run_root: Path = state.RUN_ROOT) -> None:
        self.name = check_lab_name(name)
        self.run_root = run_root
        self.state_dir = run_root / self.name
        self._spec: tuple[object, LabSpec] | None = None  # (what it was made from, spec)

    # -- what the lab is -----------------------------------------------------------------

    def _state(self) -> state.LabState | None:
        return state.load(self.state_dir)

    @property
    def spec(self) -> LabSpec:
        """The running host; read again whenever another process restarted or moved a qube."""
        current = self._state()
        if current is None or not current.topology_text:
            raise LabNotUp(f"lab {self.name} is not up")
        made_from = (current.topology_text, current.restarted)
        if self._spec is None or self._spec[0] != made_from:
            spec = load_lab_spec_text(current.topology_text, str(self.state_dir))
            topology = spec.topology
            for untrusted_qube in current.restarted:
                topology = topology.replace_qube(qube_from_json(untrusted_qube))
            self._spec = (made_from, dataclasses.replace(spec, topology=topology))
        return self._spec[1]

    @property
    def topology(self) -> Topology:
        """The running host: as built by `up`, with each restarted qube as it started."""
        return self.spec.topology

    def dom0_topology(self) -> Topology:
        """The qubes as the admin service (dom0) has them now: what a qube starts with."""
        current = dom0_state.read_current(self.dom0_dir)
        return self.topology if current is None else current

    @property
    def addresses(self) -> OutsideAddresses:
        """The outside hosts' addresses: LAN clients, internet server, provider's tunnel side."""
        return outside_addresses(self.spec)

    def netns(self, host: str) -> str:
        """The namespace of a qube or of an outside host (lan, server, provider)."""
        if host not in self.topology and host not in OUTSIDE_HOSTS:
            raise ValidationError("qube", f"{host!r} is not a qube or outside host of this lab")
        return netns_name(self.name, host)

    def store(self, qube: str) -> EntryStore:
        """The qube's QubesDB-like store (`<state>/qubesdb/<qube>/`)."""
        return EntryStore(self.state_dir / "qubesdb" / qube)

    def run(
        self, host: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """subprocess.run of argv inside the host's namespace (bounded by default)."""
        kwargs.setdefault("timeout", RUN_TIMEOUT)
        return subprocess.run(netns.exec_argv(self.netns(host), argv), **kwargs)

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(netns.exec_argv(self.netns(host), argv), **kwargs)

    def status(self) -> LabStatus:
        current = self._state()
        stores = {}
        if current is not None and current.topology_text:
            stores = {name: self.store(name) for name in self.topology.qubes}
        return collect_status(self.name, current, stores, self.dom0_dir.is_dir())

    # -- up and down ---------------------------------------------------------------------

    @property
    def admin_socket(self) -> Path:
        """The admin service's socket: Qubes' default path for the default lab."""
        if self.name == "default":
            return Path(DEFAULT_SOCKET)
        return self.state_dir / "qubesd.sock"

    @property
    def boot_id_file(self) -> Path:
        """The emulated host's boot id; writing a new one is how a test reboots the host."""
        return self.state_dir / state.BOOT_ID_FILE

    @property
    def dom0_dir(self) -> Path:
        """dom0's state: what the admin service stores (rules, properties, features)."""
        return self.state_dir / state.DOM0_DIR

    def up(self, topology_path: Path | None = None, *, agents: bool = True) -> tuple[str, ...]:
        """Build the lab, or repair it in place; dom0's state is never deleted. Says what it did.

        On a lab that is up, restarts what died and rebuilds qubes whose namespace is gone
        (nothing when healthy). Otherwise builds the host it was made from (or `topology_path`),
        each qube with the properties dom0 has for it.
        """
        if topology_path is not None:
            load_lab_spec(topology_path)  # its errors name the file
        given = None if topology_path is None else topology_path.read_text(encoding="utf-8")
        current = self._state()
        kept = self.state_dir / state.TOPOLOGY_FILE
        recorded = current.topology_text if current is not None else None
        if recorded is None and kept.exists():
            recorded = kept.read_text(encoding="utf-8")
        if not (current is not None and current.complete) and not self.dom0_dir.is_dir():
            recorded = None  # no dom0 state to keep for it: any topology may be built
        text = dom0_state.topology_text(self.name, given, recorded)
        if current is not None and current.complete:
            return recovery.repair(self)
        if current is not None:  # an `up` that did not finish: what it made goes, dom0's stays
            self._teardown(state.KEPT_BY_DOWN)
        restoring = self.dom0_dir.is_dir()
        self._build_from(text, agents, keep_on_failure=restoring)
        if restoring:
            return (f"built the lab with dom0's state kept in {self.dom0_dir}",)
        return ("built the lab",)

    def rebuild(self, *, agents: bool) -> None:
        """The whole host torn down and built again as it was; dom0's state and boot id stay."""
        text = self._require_state().topology_text
        self._teardown(state.KEPT_BY_REBUILD)
        self._build_from(text, agents, keep_on_failure=True)

    def _build_from(self, text: str, agents: bool, *, keep_on_failure: bool) -> None:
        spec = load_lab_spec_text(text, str(self.state_dir / state.TOPOLOGY_FILE))
        differing = dom0_state.differences(spec.topology, dom0_state.read_current(self.dom0_dir))
        started = time.monotonic()
        hosts = [q.name for q in spec.qubes_by_qid()] + list(OUTSIDE_HOSTS)
        namespaces = tuple(netns_name(self.name, host) for host in hosts)
        record = state.LabState(self.name, text, namespaces, restarted=differing)
        state.save(self.state_dir, record)
        try:
            (self.state_dir / state.TOPOLOGY_FILE).write_text(text, encoding="utf-8")
            self._build(self.spec, namespaces, agents)
        except BaseException:
            self._teardown(state.KEPT_BY_DOWN if keep_on_failure else frozenset())
            raise
        done = dataclasses.replace(
            self._require_state(), complete=True, seconds_to_up=time.monotonic() - started
        )
        state.save(self.state_dir, done)

    def down(self, *, keep_dom0: bool = False) -> None:
        """Stop every process of the lab, delete its namespaces and runtime files.

        `keep_dom0` keeps dom0's state and the topology for the next `up` (`qubes-lab down`);
        without it nothing of the lab is left (`qubes-lab down --purge`, test labs).
        """
        self._teardown(state.KEPT_BY_DOWN if keep_dom0 else frozenset())

    def _teardown(self, keep: frozenset[str]) -> None:
        """Stop, delete and remove what the lab made, but the files named in `keep`."""
        if not self.dom0_dir.is_dir():
            keep = frozenset()  # the rest belongs to dom0's state
        current = self._state()
        if current is not None:
            # wireguard-go keeps a deleted namespace alive: processes go first.
            for process in reversed(current.processes):
                processes.stop(process)
            for name in reversed(current.namespaces):
                netns.delete(name)
                netns.remove_netns_etc(name)
        if self.state_dir.is_dir():
            for child in self.state_dir.iterdir():
                if child.name not in keep and child.name != state.STATE_FILE:
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            # The record goes last: a teardown cut short is finished by the next one.
            (self.state_dir / state.STATE_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # kept files, or other labs may still be up
            self.state_dir.rmdir()
            self.run_root.rmdir()
        if self.name == "default":
            shutil.rmtree(qube_socket_path(self.admin_socket, "-").parent, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.admin_socket.unlink()
            with contextlib.suppress(OSError):
                self.admin_socket.parent.rmdir()
        self._spec = None

    # -- qube lifecycle ----------------------------------------------------------------

    def restart_qube(self, qube: str) -> None:
        """Shut `qube` down and start it again with the properties dom0 has for it now.

        Its namespace, links, base rules and QubesDB are made anew and its agent starts on
        an empty kernel; the admin service publishes its entries again by itself.
        """
        with host_lock.held(self.state_dir, TOPOLOGY_LOCK_TIMEOUT):
            self.restart_qube_locked(qube)

    def restart_qube_locked(self, qube: str) -> None:
        """`restart_qube` for a caller that holds the lab's topology lock."""
        restarted = self.dom0_topology()[qube]
        if restarted.is_tunnel or self.topology[qube].is_tunnel:
            raise netns.LabCommandError(f"{qube}: restarting a tunnel qube is not emulated")
        plan, spec = plan_restart(self.name, self.spec, restarted, self.addresses)
        self.stop_agent(qube)
        self.stop_firewall_worker(qube)
        apply_network(plan, self.netns(LAN))
        state.save(self.state_dir, self._require_state().with_restarted(qube_to_json(restarted)))
        # A fresh QubesDB (static keys only: dom0 publishes the rest) and a fresh /run.
        store = self.store(qube)
        store.replace_except((), plan.static[qube])
        store.clear_status()
        shutil.rmtree(self._agent_run(qube), ignore_errors=True)
        for served, keys in plan.static.items():
            if served != qube:
                self.store(served).replace_except(_PUBLISHED, keys)
        self.start_agent(qube)
        if plan.static[qube].get(FIREWALL_SERVICE_KEY) == "1":
            self.start_firewall_worker(qube)
        self._wait_agents_applied(list(plan.static), AGENT_READY_TIMEOUT)
        self.reload_qubes_firewall(qube)
        old_natd = self._require_state().process(f"natd:{qube}")
        if old_natd is not None:  # it went down with the namespace
            state.save(self.state_dir, self._require_state().without_process(old_natd))
        if serves_app_qubes(spec.topology, restarted):
            self.start_natd(qube)

    def reattach(self, qube: str) -> bool:
        """Move running `qube`'s uplink to the netvm dom0 has for it now, as Qubes does live.

        Its namespace and processes stay; its gateway keys change. False when it already
        runs behind that netvm.
        """
        if qube not in self.topology:
            raise ValidationError("qube", f"{qube!r} is not a qube of this lab")
        with host_lock.held(self.state_dir, TOPOLOGY_LOCK_TIMEOUT):
            netvm = self.dom0_topology()[qube].netvm
            running = self.spec
            plan, spec = reattach.plan_reattach(self.name, running, qube, netvm, self.addresses)
            if not plan.changes_anything:
                return False
            reattach.apply_network(plan)
            state.save(
                self.state_dir, self._require_state().with_restarted(qube_to_json(plan.qube))
            )
            self.store(qube).replace_except(_PUBLISHED, plan.static)
            for name in {running.topology[qube].netvm, netvm} - {None}:
                self.match_natd(spec.topology, str(name))
        return True

    def reload_base_rules(self, qube: str) -> None:
        """What a reload of Qubes' base rules does: all but the worker's tables made anew."""
        spec = self.spec
        params = base_params(spec, spec.topology[qube], self.addresses)
        # Every table goes but the qubes-firewall worker's: Qubes' base rules are loaded by
        # their own service, which leaves the worker's tables (and their per-source rules)
        # alone; the worker builds them only at its start.
        tables = netns.nft_tables(self.netns(qube))
        kept = {(family, name) for family, name in tables if name == WORKER_TABLE}
        script = "".join(f"delete table {f} {n}\n" for f, n in tables if (f, n) not in kept)
        script += base_ruleset(params, firewall_tables=not kept)
        if spec.topology[qube].is_tunnel:
            script += vpn.leak_guard_ruleset(spec.topology[qube].uplink)
        netns.nft_load(self.netns(qube), script)

    # -- building ----------------------------------------------------------------------

    def require_state(self) -> state.LabState:
        """The lab's record; LabNotUp when there is none."""
        current = self._state()
        if current is None:
            raise LabNotUp(f"lab {self.name} is not up")
        return current

    def _require_state(self) -> state.LabState:
        return self.require_state()

    def _spawn(self, role: str, host: str, argv: Sequence[str]) -> processes.TrackedProcess:
        log = self.state_dir / "logs" / f"{role.replace(':', '-')}.log"
        process = processes.spawn(role, self.netns(host), argv, log)
        state.save(self.state_dir, self._require_state().with_process(process))
        return process

    def _build(self, spec: LabSpec, namespaces: Sequence[str], agents: bool) -> None:
        a = outside_addresses(spec)
        for name in namespaces:
            netns.add(name)
        veths = qube_veths(self.name, spec.topology) + outside_veths(self.name, spec)
        for name in namespaces:
            netns.ip_batch(name, [v.add_command() for v in veths if v.netns_a == name])
        for setup in self._setups(spec, a):
            netns.write_netns_etc(setup.netns, setup.etc_files)
            netns.ip_batch(setup.netns, setup.commands)
            netns.sysctls(setup.netns, setup.sysctls)
        for qube in spec.qubes_by_qid():
            netns.nft_load(self.netns(qube.name), base_ruleset(base_params(spec, qube, a)))
        netns.nft_load(self.netns(PROVIDER), provider_nat_ruleset(a))
        for qube in spec.qubes_by_qid():
            edge_address = str(a.edge_lan4) if qube.name == spec.edge.name else None
            self.store(qube.name).set_many(static_keys(spec.topology, qube, edge_address))
        self.start_dns(LAN)
        if agents:
            for qube in spec.qubes_by_qid():
                self.start_agent(qube.name)
            self._wait_agents_applied(list(spec.topology.qubes), AGENT_READY_TIMEOUT)
        # Qubes' own service: it runs whether or not our agents do. Until dom0's qubesd starts
        # and writes each qube's stored rules, they have Qubes' default (accept): the tunnels
        # below need their traffic through.
        workers = [q.name for q in spec.qubes_by_qid() if q.provides_network]
        default = FirewallEntriesWriter(lambda qube: FileQubeDb(self.store(qube).path))
        for qube_name in workers:
            default.reload_netvm(spec.topology, lambda _: DEFAULT_RULES, qube_name, 0.0, "")
            self.start_firewall_worker(qube_name)
        if spec.tunnel_qubes:
            self.build_tunnels(spec, a)
            self.start_dns(PROVIDER)
        if not self.boot_id_file.exists():  # a rebuild in the same boot keeps it
            self.boot_id_file.write_text(f"{uuid.uuid4()}\n")
        before = self._handled_counts(workers)
        self.start_admin()  # writes every qube's outbound firewall into its netvm, as qubesd does
        self._wait_firewall_handled(self.dom0_topology(), dict.fromkeys(workers), before)
        for qube in spec.qubes_by_qid():
            if serves_app_qubes(spec.topology, qube):
                self.start_natd(qube.name)

    def _setups(self, spec: LabSpec, a: OutsideAddresses) -> list[NamespaceSetup]:
        setups = [full_setup(self.name, spec, qube, a) for qube in spec.qubes_by_qid()]
        return setups + outside_setups(self.name, a)
