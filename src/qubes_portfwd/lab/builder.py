"""The `Lab`: build, inspect and tear down an emulated Qubes host made of namespaces."""

import contextlib
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qubes_portfwd.admin.access import qube_socket_path
from qubes_portfwd.admin.topology_json import qube_from_json, qube_to_json, topology_from_json
from qubes_portfwd.defaults import DEFAULT_SOCKET
from qubes_portfwd.model.entries import FIREWALL_PREFIX, FORWARD_PREFIX
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.nft.qubes_base import base_ruleset

from . import host_lock, netns, processes, reattach, state, vpn
from .daemons import LabDaemons
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
from .qubesdb_keys import default_firewall_keys, serves_app_qubes, static_keys
from .restart import apply_network, base_params, full_setup, plan_restart
from .status import LabStatus, collect_status
from .topology_file import LabSpec, load_lab_spec, load_lab_spec_text

_LAB_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,15}\Z")
AGENT_READY_TIMEOUT = 15.0
DNS_READY_TIMEOUT = 5.0
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
        path = self.state_dir / "admin" / "topology.json"
        try:
            untrusted_document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return self.topology
        return topology_from_json(untrusted_document["current"])

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
        return collect_status(self.name, current, stores)

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
        return self.state_dir / "boot_id"

    def up(self, topology_path: Path | None = None, *, agents: bool = True) -> None:
        """Build the lab; a no-op when the same lab is already up and healthy."""
        spec = load_lab_spec(topology_path)
        text = spec_text(topology_path)
        current = self._state()
        if current is not None:
            if current.complete and current.topology_text == text and self.status().healthy:
                return
            self.down()
        started = time.monotonic()
        hosts = [q.name for q in spec.qubes_by_qid()] + list(OUTSIDE_HOSTS)
        namespaces = tuple(netns_name(self.name, host) for host in hosts)
        state.save(self.state_dir, state.LabState(self.name, text, namespaces))
        try:
            self._build(spec, namespaces, agents)
        except BaseException:
            self.down()
            raise
        done = dataclasses.replace(
            self._require_state(), complete=True, seconds_to_up=time.monotonic() - started
        )
        state.save(self.state_dir, done)

    def down(self) -> None:
        """Stop every process the lab started, delete its namespaces and files; nothing else."""
        current = self._state()
        if current is not None:
            # wireguard-go keeps a deleted namespace alive: processes go first.
            for process in reversed(current.processes):
                processes.stop(process)
            for name in reversed(current.namespaces):
                netns.delete(name)
                netns.remove_netns_etc(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # other labs may still be up
            self.run_root.rmdir()
        if self.name == "default":
            shutil.rmtree(qube_socket_path(self.admin_socket, "-").parent, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.admin_socket.unlink()
            with contextlib.suppress(OSError):
                self.admin_socket.parent.rmdir()
        self._spec = None

    # -- agents ------------------------------------------------------------------------

    def start_agent(self, qube: str) -> processes.TrackedProcess:
        argv = [sys.executable, "-m", "qubes_portfwd.agent", "--qube", qube]
        argv += ["--store", str(self.store(qube).path), "--runtime-dir", str(self._agent_run(qube))]
        return self._spawn(f"agent:{qube}", qube, argv)

    def _agent_run(self, qube: str) -> Path:
        """The agent's runtime dir: /run inside the qube, so it goes when the qube restarts."""
        return self.state_dir / "run" / f"agent-{qube}"

    def stop_agent(self, qube: str) -> None:
        current = self._require_state()
        process = current.process(f"agent:{qube}")
        if process is not None:
            processes.stop(process)
            state.save(self.state_dir, self._require_state().without_process(process))

    def restart_agent(self, qube: str) -> processes.TrackedProcess:
        self.stop_agent(qube)
        process = self.start_agent(qube)
        self._wait_agents_applied([qube], AGENT_READY_TIMEOUT)
        return process

    # -- qube lifecycle ----------------------------------------------------------------

    def restart_qube(self, qube: str) -> None:
        """Shut `qube` down and start it again with the properties dom0 has for it now.

        Its namespace, links, base rules and QubesDB are made anew and its agent starts on
        an empty kernel; the admin service publishes its entries again by itself.
        """
        with host_lock.held(self.state_dir, TOPOLOGY_LOCK_TIMEOUT):
            self._restart_qube_locked(qube)

    def _restart_qube_locked(self, qube: str) -> None:
        restarted = self.dom0_topology()[qube]
        if restarted.is_tunnel or self.topology[qube].is_tunnel:
            raise netns.LabCommandError(f"{qube}: restarting a tunnel qube is not emulated")
        plan, spec = plan_restart(self.name, self.spec, restarted, self.addresses)
        self.stop_agent(qube)
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
        self._wait_agents_applied(list(plan.static), AGENT_READY_TIMEOUT)
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
        """What a reload of Qubes' base rules does: the whole ruleset flushed and loaded again."""
        spec = self.spec
        params = base_params(spec, spec.topology[qube], self.addresses)
        script = "flush ruleset\n" + base_ruleset(params)
        if spec.topology[qube].is_tunnel:
            script += vpn.leak_guard_ruleset(spec.topology[qube].uplink)
        netns.nft_load(self.netns(qube), script)

    # -- building ----------------------------------------------------------------------

    def _require_state(self) -> state.LabState:
        current = self._state()
        if current is None:
            raise LabNotUp(f"lab {self.name} is not up")
        return current

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
            keys = static_keys(spec.topology, qube, edge_address)
            if qube.provides_network:
                keys |= default_firewall_keys(spec.topology, qube)
            self.store(qube.name).set_many(keys)
        self._start_dns(LAN, a.lan_dns4, a)
        if agents:
            for qube in spec.qubes_by_qid():
                self.start_agent(qube.name)
            self._wait_agents_applied(list(spec.topology.qubes), AGENT_READY_TIMEOUT)
        if spec.tunnel_qubes:
            self._build_tunnels(spec, a)
            self._start_dns(PROVIDER, a.provider_tunnel4, a)
        self.boot_id_file.write_text(f"{uuid.uuid4()}\n")
        self.start_admin()
        for qube in spec.qubes_by_qid():
            if serves_app_qubes(spec.topology, qube):
                self.start_natd(qube.name)

    def _setups(self, spec: LabSpec, a: OutsideAddresses) -> list[NamespaceSetup]:
        setups = [full_setup(self.name, spec, qube, a) for qube in spec.qubes_by_qid()]
        return setups + outside_setups(self.name, a)

    def _start_dns(self, host: str, listen: Any, a: OutsideAddresses) -> None:
        ready = self.state_dir / "run" / f"dns-{host}.ready"
        ready.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "qubes_portfwd.lab.dns_responder", "--listen", str(listen)]
        argv += ["--ready", str(ready)]
        for name, records in a.dns_records().items():
            argv += [arg for record in records for arg in ("--record", f"{name}={record}")]
        self._spawn(f"dns:{host}", host, argv)
        processes.wait_until(ready.exists, DNS_READY_TIMEOUT, f"DNS responder in {host}")

    def _wait_agents_applied(self, qubes: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for qube in qubes:
            store = self.store(qube)
            remaining = max(0.1, deadline - time.monotonic())
            status = store.wait_for_handled(store.generation(), remaining)
            if status.error:
                raise netns.LabCommandError(f"agent in {qube}: {status.error}")

    def _build_tunnels(self, spec: LabSpec, a: OutsideAddresses) -> None:
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


def spec_text(topology_path: Path | None) -> str:
    from .topology_file import default_topology_text

    if topology_path is None:
        return default_topology_text()
    return topology_path.read_text(encoding="utf-8")
