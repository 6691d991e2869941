"""Bringing a lab back after something died, keeping dom0's state (stored rules, properties,
features): what to redo, as values, and doing it.

A dead process is started again by its recorded role; a qube whose namespace is gone is
rebuilt as a restart of that qube does. Only when the edge's LAN side, a tunnel qube, an
outside host or two neighbouring qubes are gone is the whole host built again, with the
same boot id and dom0's state as it is.
"""

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.natpmp import wire

from . import host_lock, netns, processes, provider_miniupnpd, provider_natpmp, tunnel_keeper, vpn
from .layout import netns_name
from .outside import OUTSIDE_HOSTS
from .processes import TrackedProcess
from .state import LabState
from .topology_file import LabSpec

if TYPE_CHECKING:
    from .builder import Lab

LOCK_TIMEOUT = 120.0  # a restart or re-attach by another process may be under way
# Restart order: the tunnel before what listens on its addresses, agents before dom0
# publishes to them, dom0 before the natd processes that call it.
KIND_ORDER = (
    "wireguard-go",
    "dns",
    "agent",
    "qubes-firewall",
    "admind",
    "natd",
    provider_natpmp.ROLE,
    provider_miniupnpd.ROLE,
    "tunnel-keeper",
    "miniupnpd",
)
# `up` starts these
BUILT_KINDS = frozenset({"wireguard-go", "dns", "agent", "qubes-firewall", "admind", "natd"})
WITH_THE_QUBE = ("agent", "qubes-firewall", "natd")  # a qube's rebuild starts these again
_ROLE = re.compile(r"[a-z0-9][a-z0-9:._-]{0,99}\Z")


def kind(role: str) -> str:
    return role.split(":", 1)[0]


@dataclass(frozen=True)
class RepairPlan:
    """What brings a lab back, in the order it is done."""

    rebuild: str = ""  # why the whole host is built again; "" when it is not
    orphans: tuple[TrackedProcess, ...] = ()  # alive in a namespace that is gone: stopped first
    qubes: tuple[str, ...] = ()  # rebuilt one by one, their namespace gone
    processes: tuple[TrackedProcess, ...] = ()  # started again (after a rebuild: the extras)

    @property
    def nothing(self) -> bool:
        return not (self.rebuild or self.orphans or self.qubes or self.processes)


def in_order(dead: Sequence[TrackedProcess]) -> tuple[TrackedProcess, ...]:
    """Restart order; the tunnel's ends are restarted together, so once."""
    rank = {name: index for index, name in enumerate(KIND_ORDER)}
    ordered = sorted(dead, key=lambda p: rank.get(kind(p.role), len(KIND_ORDER)))
    first_end = next((p for p in ordered if p.role.startswith(vpn.ROLE_PREFIX)), None)
    return tuple(p for p in ordered if p is first_end or not p.role.startswith(vpn.ROLE_PREFIX))


def plan_repair(
    current: LabState,
    spec: LabSpec,
    present: Collection[str],
    running: Collection[TrackedProcess],
) -> RepairPlan:
    """What brings `current` (running as `spec`) back; `present`: the namespaces that exist,
    `running`: the recorded processes still alive."""
    extras = in_order([p for p in current.processes if kind(p.role) not in BUILT_KINDS])
    if not current.complete:
        return RepairPlan(rebuild="its last `up` did not finish", processes=extras)
    hosts = {netns_name(current.lab, h): h for h in [*spec.topology.qubes, *OUTSIDE_HOSTS]}
    gone = [ns for ns in current.namespaces if ns not in present]
    gone_hosts = {hosts.get(ns, ns) for ns in gone}
    for ns in gone:
        host = hosts.get(ns)
        if host is None or host in OUTSIDE_HOSTS:
            return RepairPlan(rebuild=f"namespace {ns} is gone", processes=extras)
        qube = spec.topology[host]
        if qube.is_tunnel or (qube.netvm is None and qube.provides_network):
            return RepairPlan(rebuild=f"namespace {ns} of {host} is gone", processes=extras)
        neighbours = {qube.netvm} | {d.name for d in spec.topology.downstream(host)}
        if neighbours & gone_hosts:
            both = ", ".join(sorted(gone))
            return RepairPlan(rebuild=f"namespaces {both} are gone", processes=extras)
    qubes = tuple(hosts[ns] for ns in gone)
    with_qubes = {f"{k}:{q}" for q in qubes for k in WITH_THE_QUBE}
    orphans = tuple(p for p in current.processes if p.netns in gone and p in running)
    dead = [
        p
        for p in current.processes
        if (p not in running or p.netns in gone) and p.role not in with_qubes
    ]
    return RepairPlan("", orphans, qubes, in_order(dead))


def role_named(untrusted_words: Sequence[str]) -> str:
    """The role `qubes-lab restart` names: as `status` lists it (`agent:work`) or in two
    words (`agent work`)."""
    if len(untrusted_words) == 2 and ":" not in untrusted_words[0]:
        untrusted_role = f"{untrusted_words[0]}:{untrusted_words[1]}"
    elif len(untrusted_words) == 1:
        untrusted_role = untrusted_words[0]
    else:
        raise ValidationError(
            "process", "expected ROLE or KIND NAME, e.g. admind, agent work, natd:sys-firewall"
        )
    if not _ROLE.match(untrusted_role):
        raise ValidationError("process", f"{untrusted_role!r}: expected a role as status shows")
    return untrusted_role


# -- doing it ----------------------------------------------------------------------------


def repair(lab: "Lab") -> tuple[str, ...]:
    """Bring an up lab back to healthy; what it did, one line each ("already up" if nothing)."""
    with host_lock.held(lab.state_dir, LOCK_TIMEOUT):
        current = lab.require_state()
        present = [ns for ns in current.namespaces if netns.exists(ns)]
        running = [p for p in current.processes if processes.is_running(p)]
        plan = plan_repair(current, lab.spec, present, running)
        if plan.nothing:
            return ("already up: nothing to do",)
        if not plan.rebuild:
            return _repair_in_place(lab, plan)
        agents = any(kind(p.role) == "agent" for p in current.processes)
    # The rebuild removes the lock's file with the rest of the runtime: it runs outside it.
    lab.rebuild(agents=agents)
    done = [f"rebuilt the lab ({plan.rebuild}); dom0's state and boot id kept"]
    for process in plan.processes:
        done += _restart(lab, process)
    return tuple(done)


def _repair_in_place(lab: "Lab", plan: RepairPlan) -> tuple[str, ...]:
    done = []
    for process in plan.orphans:  # they keep a deleted namespace and its links alive
        processes.stop(process)
    for qube in plan.qubes:
        lab.restart_qube_locked(qube)
        done.append(f"rebuilt qube {qube} (its namespace was gone)")
    for process in plan.processes:
        done += _restart(lab, process)
    return tuple(done)


def restart(lab: "Lab", role: str) -> tuple[str, ...]:
    """Restart the lab's process `role` (stopped first if alive); what it did."""
    lab.require_state()  # before the lock, whose file would make a lab's directory
    with host_lock.held(lab.state_dir, LOCK_TIMEOUT):
        current = lab.require_state()
        process = current.process(role)
        if process is None:
            known = ", ".join(p.role for p in current.processes)
            raise ValidationError(
                "process", f"{role!r} is not a process of lab {lab.name}; it has: {known}"
            )
        return _restart(lab, process)


def _restart(lab: "Lab", process: TrackedProcess) -> list[str]:
    role, name = process.role, process.role.partition(":")[2]
    what = kind(role)
    if what == "wireguard-go":
        ends = lab.restart_tunnel()
        return [f"restarted {end.role} (now pid {end.pid}; every end, new keys)" for end in ends]
    if what == "admind":
        new = lab.restart_admin()
    elif what == "agent":
        new = lab.restart_agent(name)
    elif what == "qubes-firewall":
        new = lab.restart_firewall_worker(name)
    elif what == "natd":
        new = lab.restart_natd(name)
    elif what == "dns":
        new = lab.restart_dns(name)
    elif what == "tunnel-keeper":
        tunnel_keeper.stop(lab, name)
        lifetime = processes.option(process, "--lifetime") or wire.RECOMMENDED_LIFETIME
        new = tunnel_keeper.start(lab, name, int(lifetime))
    elif role == provider_natpmp.ROLE:
        provider_natpmp.stop(lab)
        lease = processes.option(process, "--lease") or provider_natpmp.DEFAULT_LEASE
        new = provider_natpmp.start(lab, int(lease))
    elif role == provider_miniupnpd.ROLE:
        provider_miniupnpd.stop(lab)
        new = provider_miniupnpd.start(lab)
    elif what == "miniupnpd":
        new = provider_miniupnpd.restart_gateway(lab, name)
    else:
        raise netns.LabCommandError(f"{role}: the lab does not know how to start it again")
    return [f"restarted {role} (pid {process.pid}, now {new.pid})"]
