"""Measurements 4 and 5: 10,000 forwards across the host, the restarts, the service at rest.

Each forward is stored as its target's feature `portfwd.<id>` with the complete value (its
`via` recorded, as `AdminClient.add_forward` completes it), written into the service's state
while it is stopped (one Admin API Set per forward re-plans the whole host each time: 10,000
of them take hours; add_scaling measures one Set's cost). Convergence is then the service's
start to every hop applied: planning all of it, publishing level by level, every agent
loading its share. Convergence is read from the
qubes' entry stores (what the agents report), not asked of the admin service, so watching
does not load the process being measured.
"""

import dataclasses
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from qubes_lab.entry_store import STATUS_APPLIED, EntryStore
from qubes_lab.qubesd.state import HostState
from qubes_lab.state import DOM0_DIR
from qubes_portfwd.client import ForwardState, HopState
from qubes_portfwd.model.entries import FORWARD_PREFIX
from qubes_portfwd.model.forward_feature import feature_name
from qubes_portfwd.model.rule import forward_id
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.topology import Topology

from .lab_session import LabSession
from .processes import BenchError
from .procstat import peak_rss_kib, sample_at_rest
from .settings import Settings

TARGET_S = 2.0
FIRST_PORT = 30000
POLL = 0.05
CONVERGE_TIMEOUT = 900.0
SETTLE_S = 3.0  # after convergence, before the rest window: the last status writes land
# The product's processes, whose wakeups at rest are the verdict; the lab's others (the
# emulated Qubes worker, DNS, wireguard-go, the provider) are sampled and shown beside them.
OUR_ROLES = ("admind", "agent:", "natd:", "tunnel-keeper:")
LATER_S = 30.0  # a second window starts this long after convergence: the last apply's tail is over


def is_ours(role: str) -> bool:
    """Whether a lab process role is one the product ships (not the lab's stand-ins)."""
    return role.startswith(OUR_ROLES)


def spread(
    count: int, topology: Topology, sources: str, first_port: int = FIRST_PORT
) -> dict[str, list[str]]:
    """`count` external forwards round-robin over every qube that has a path, each its port
    from `first_port`; each line records that path (`via=`), as the service stores it."""
    targets = sorted(
        q.name for q in topology.qubes.values() if q.netvm is not None and not q.provides_network
    )
    lines: dict[str, list[str]] = {t: [] for t in targets}
    for n in range(count):
        port = first_port + n
        target = targets[n % len(targets)]
        lines[target].append(
            f"action=forward forwardtype=external proto=tcp srcports={port}-{port} "
            f"dstports={port}-{port} srchost={sources} via={','.join(topology.path(target))}"
        )
    return lines


def store_offline(session: LabSession, lines: Mapping[str, list[str]]) -> float:
    """Every forward as its target's feature, written into the stopped service's state, as a
    restored dom0 holds them; the seconds it took. One Admin API Set per forward would
    re-plan the whole host 10,000 times (hours here; add_scaling measures a Set's cost)."""
    session.lab.stop_admin()
    started = time.monotonic()
    state = HostState.open(session.lab.state_dir / DOM0_DIR, None)
    topology = state.topology
    for target, forwards in lines.items():
        qube = topology[target]
        features = dict(qube.features)
        for line in forwards:
            features[feature_name(forward_id(target, parse_rule(line)))] = line
        topology = topology.replace_qube(dataclasses.replace(qube, features=features))
    state.commit_topology(topology, state.explicit)
    return time.monotonic() - started


def expected_hops(lines: Mapping[str, list[str]], topology: Topology) -> dict[str, int]:
    """Forward entries each qube must report applied: every hop of the path and the target."""
    counts: Counter[str] = Counter()
    for target, forwards in lines.items():
        for qube in (*topology.path(target), target):
            counts[qube] += len(forwards)
    return dict(counts)


class StoreWatch:
    """Whether one qube's agent applied exactly the expected number of forward entries."""

    def __init__(self, store: EntryStore, expected: int) -> None:
        self.store = store
        self.expected = expected
        self._token: object = None
        self._done = False
        self._generation = 0
        self._committed_at = 0.0  # when this watch first saw the latest commit (±POLL)

    def done(self) -> bool:
        token = self.store.state_token()
        if token != self._token:
            self._token = token
            generation, entries = self.store.read()
            if generation != self._generation:
                self._generation, self._committed_at = generation, time.time()
            status = self.store.read_status()
            keys = [k for k in entries if k.startswith(FORWARD_PREFIX)]
            self._done = (
                len(keys) == self.expected
                and status.handled >= generation
                and all(status.per_key.get(k) == STATUS_APPLIED for k in keys)
            )
        return self._done

    def timeline(self, wall_start: float) -> dict[str, float]:
        """When the last generation was committed (by the admin; as seen by this watch) and
        handled (by the agent)."""
        return {
            "published_s": self._committed_at - wall_start,
            "applied_s": self.store.read_status().updated - wall_start,
        }


def wait_converged(watches: Mapping[str, StoreWatch], started: float, timeout: float) -> float:
    deadline = started + timeout
    # Every watch each round (no short cut): each notes when it first saw its last commit.
    while not all([w.done() for w in watches.values()]):
        if time.monotonic() >= deadline:
            behind = sorted(q for q, w in watches.items() if not w.done())
            raise BenchError(f"not converged within {timeout} s: {behind}")
        time.sleep(POLL)
    return time.monotonic() - started


def _peaks(session: LabSession, qubes: list[str]) -> dict[str, int]:
    roles = ["admind", *(f"agent:{q}" for q in qubes)]
    return {role: peak_rss_kib(session.pid(role)) for role in roles}


def _listing_complete(session: LabSession, count: int) -> bool:
    forwards = session.client().forwards()
    return len(forwards) == count and all(
        f.state == ForwardState.ACTIVE and all(h.state == HopState.APPLIED for h in f.hops)
        for f in forwards
    )


def measure(session: LabSession, settings: Settings) -> dict[str, Any]:
    topology = session.lab.topology
    count = settings.convergence_forwards
    lines = spread(count, topology, session.lan_network)
    expected = expected_hops(lines, topology)
    watches = {q: StoreWatch(session.lab.store(q), expected.get(q, 0)) for q in topology.qubes}
    busy = sorted(q for q in topology.qubes if expected.get(q))

    left = session.client().forwards()
    if left:  # they would be removed during the measurement and counted in it
        raise BenchError(f"convergence must start from no forwards; {len(left)} left before it")
    stored_s = store_offline(session, lines)
    wall_start = time.time()
    started = time.monotonic()
    session.lab.start_admin()
    converge_s = wait_converged(watches, started, CONVERGE_TIMEOUT)
    timeline = {q: watches[q].timeline(wall_start) for q in busy}
    peaks_first = _peaks(session, busy)

    time.sleep(SETTLE_S)  # a fixed settling period before the window, not a condition wait
    edge_agent = max(busy, key=lambda q: (expected[q], q))
    rest_pids = session.running()
    rest = sample_at_rest(rest_pids, settings.rest_seconds)
    # The first window still holds the edge agent's tail of its last apply (its check and
    # `nft monitor` printing that transaction); the later one is the steady state.
    time.sleep(max(0.0, LATER_S - SETTLE_S - settings.rest_seconds))  # a fixed gap, no condition
    rest_later = sample_at_rest(rest_pids, settings.rest_later_seconds)

    restart_started = time.monotonic()
    session.lab.restart_admin()
    restart_answer_s = time.monotonic() - restart_started
    deadline = restart_started + CONVERGE_TIMEOUT
    while not _listing_complete(session, count):
        if time.monotonic() >= deadline:
            raise BenchError("after the restart the listing never showed every forward applied")
        time.sleep(POLL)
    restart_listing_s = time.monotonic() - restart_started

    cold = _cold_reapply(session, watches)
    return {
        "forwards": count,
        "per_target": {t: len(f) for t, f in lines.items()},
        "expected_entries": expected,
        "stored_offline_s": stored_s,
        "converge_s": converge_s,  # from the service's start with every forward stored
        "timeline_s": timeline,
        "peak_rss_kib": peaks_first,
        "restart": {"answers_s": restart_answer_s, "listing_complete_s": restart_listing_s},
        "cold_reapply": cold,
        "rest": {
            "edge_agent": edge_agent,
            "ours": sorted(name for name in rest_pids if is_ours(name)),
            "window_s": settings.rest_seconds,
            "processes": {name: vars(sample) for name, sample in rest.items()},
            "later_start_s": LATER_S,
            "later_window_s": settings.rest_later_seconds,
            "later": {name: vars(sample) for name, sample in rest_later.items()},
        },
        "target_s": TARGET_S,
        "met": converge_s <= TARGET_S and cold["converge_s"] <= TARGET_S,
    }


def _cold_reapply(session: LabSession, watches: Mapping[str, StoreWatch]) -> dict[str, Any]:
    """Admin stopped, every qube's published entries gone (agents remove their rules), admin
    started: it re-plans everything from the stored features and republishes."""
    session.lab.stop_admin()
    emptied = {q: w.store.replace_prefixes((FORWARD_PREFIX,), {}) for q, w in watches.items()}
    for qube, generation in emptied.items():
        watches[qube].store.wait_for_handled(generation, CONVERGE_TIMEOUT)
    wall_start = time.time()
    started = time.monotonic()
    session.lab.start_admin()
    answers_s = time.monotonic() - started
    converge_s = wait_converged(watches, started, CONVERGE_TIMEOUT)
    busy = [q for q, w in watches.items() if w.expected]
    return {
        "answers_s": answers_s,
        "converge_s": converge_s,
        "timeline_s": {q: watches[q].timeline(wall_start) for q in busy},
        "peak_rss_kib": _peaks(session, busy),
    }
