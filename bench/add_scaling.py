"""Issue 17, target 2: the cost of one add against the forwards already on the host.

The host is loaded with the smaller count of forwards (spread over every target, stored as
features while the service is stopped, as convergence stores them; then the service starts
and every hop applies them), then K adds of a fresh forward on `work` through
`AdminClient.add_forward`, each removed before the next, timing the call and the call to
the first end-to-end connection; then the host is loaded to the larger count and the same is
repeated. It runs in a lab of its own (run.py), purged after it, so the other measurements
keep a clean host.
"""

import time
from typing import Any

from .convergence import (
    CONVERGE_TIMEOUT,
    StoreWatch,
    expected_hops,
    spread,
    store_offline,
    wait_converged,
)
from .lab_session import LabSession
from .propagation import forward_line
from .settings import Settings
from .stats import ratio, summarize

TARGET_RATIO = 1.2  # add p50 at the larger count <= 1.2 x at the smaller
TARGET_QUBE = "work"
SERVICE_PORT = 8282  # propagation serves 8080, nat_latency 8181
# Ports away from propagation (20000..), nat_latency (21000..) and convergence (30000..40000).
FIRST_ADD_PORT = 45000
FIRST_LOAD_PORT = 50000
ARRIVAL_TIMEOUT = 10.0


def _wait_applied(session: LabSession, lines: dict[str, list[str]]) -> float:
    """Seconds until every qube's agent applied exactly these forwards (none else)."""
    topology = session.lab.topology
    expected = expected_hops(lines, topology)
    watches = {q: StoreWatch(session.lab.store(q), expected.get(q, 0)) for q in topology.qubes}
    return wait_converged(watches, time.monotonic(), CONVERGE_TIMEOUT)


def _adds(session: LabSession, count: int, first_port: int) -> dict[str, Any]:
    """`count` adds on fresh ports, each removed again before the next."""
    client = session.client()
    edge = str(session.lab.addresses.edge_lan4)
    prober = session.prober()
    call_s: list[float] = []
    total_s: list[float] = []
    failures = 0
    for n in range(count):
        started = time.monotonic()
        line = forward_line(first_port + n, session.lan_network, SERVICE_PORT)
        added = client.add_forward(TARGET_QUBE, line)
        returned = time.monotonic()
        arrival = prober.wait_for(edge, first_port + n, ARRIVAL_TIMEOUT)
        client.remove_forward(TARGET_QUBE, added)
        call_s.append(returned - started)
        if arrival.ok:
            total_s.append(max(0.0, arrival.at - started))
        else:
            failures += 1
    return {
        "adds": count,
        "call_ms": summarize(call_s).scaled(1e3).to_json(),
        "call_to_first_connection_ms": summarize(total_s).scaled(1e3).to_json()
        if total_s
        else None,
        "failures": failures,
    }


def measure(session: LabSession, settings: Settings) -> dict[str, Any]:
    small, large = settings.add_scaling_loads
    topology = session.lab.topology
    session.start_server(TARGET_QUBE, SERVICE_PORT)
    phases: dict[str, Any] = {}
    for phase, count in enumerate((small, large)):
        wanted = spread(count, topology, session.lan_network, FIRST_LOAD_PORT)
        load_s = store_offline(session, wanted)  # the smaller load's forwards are among them
        session.lab.start_admin()
        applied_s = _wait_applied(session, wanted)
        first_port = FIRST_ADD_PORT + phase * settings.add_scaling_adds
        phases[str(count)] = {
            "load_s": load_s,
            "load_applied_s": applied_s,
            **_adds(session, settings.add_scaling_adds, first_port),
        }
    small_p50 = phases[str(small)]["call_ms"]["p50"]
    large_p50 = phases[str(large)]["call_ms"]["p50"]
    measured = ratio(large_p50, small_p50)
    return {
        "loads": [small, large],
        "target_qube": TARGET_QUBE,
        "phases": phases,
        "add_p50_ms": {str(small): small_p50, str(large): large_p50},
        "ratio_add_p50": measured,
        "target_ratio": TARGET_RATIO,
        "met": measured is not None and measured <= TARGET_RATIO,
    }
