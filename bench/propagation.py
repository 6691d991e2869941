"""Measurement 3: from the `AdminClient.add_forward` call to the first end-to-end connection."""

import time
from typing import Any

from .lab_session import LabSession
from .processes import BenchError
from .settings import Settings
from .stats import summarize

# Issue 17: from the call (not from its return) to the first connection through the chain.
TARGET_P50_MS = 30.0
TARGET_P99_MS = 80.0
TARGET_QUBE = "work"
SERVICE_PORT = 8080
FIRST_EDGE_PORT = 20000
ARRIVAL_TIMEOUT = 10.0


def forward_line(edge_port: int, sources: str, service_port: int = SERVICE_PORT) -> str:
    return (
        f"action=forward forwardtype=external proto=tcp srcports={edge_port}-{edge_port} "
        f"dstports={service_port}-{service_port} srchost={sources}"
    )


def measure(session: LabSession, settings: Settings) -> dict[str, Any]:
    """Each add on a fresh port (nothing cached anywhere), removed again before the next."""
    client = session.client()
    edge = str(session.lab.addresses.edge_lan4)
    session.start_server(TARGET_QUBE, SERVICE_PORT)
    prober = session.prober()
    call_s: list[float] = []
    after_return_s: list[float] = []
    total_s: list[float] = []
    attempts: list[int] = []
    failures = 0
    before_return = 0  # connections that worked before the call returned
    for n in range(settings.propagation_adds):
        port = FIRST_EDGE_PORT + n
        # Attempts run from before the call: a connection that works before the call returns
        # (the lab's call also waits for the status document) is seen when it works.
        prober.begin(edge, port, ARRIVAL_TIMEOUT)
        started = time.monotonic()
        forward_id = client.add_forward(TARGET_QUBE, forward_line(port, session.lan_network))
        returned = time.monotonic()
        arrival = prober.arrival(ARRIVAL_TIMEOUT)
        client.remove_forward(TARGET_QUBE, forward_id)
        call_s.append(returned - started)
        if arrival.ok and arrival.at < started:  # through no forward of ours: not a result
            raise BenchError(f"port {port} answered before its forward was added")
        if arrival.ok:
            before_return += arrival.at < returned
            after_return_s.append(max(0.0, arrival.at - returned))
            total_s.append(max(0.0, arrival.at - started))
            attempts.append(arrival.attempts)
        else:
            failures += 1
    after_return = summarize(after_return_s).scaled(1e3) if after_return_s else None
    total = summarize(total_s).scaled(1e3) if total_s else None
    return {
        "adds": settings.propagation_adds,
        "call_ms": summarize(call_s).scaled(1e3).to_json(),
        "after_return_ms": after_return.to_json() if after_return else None,
        "call_to_first_connection_ms": total.to_json() if total else None,
        "first_connection_before_return": before_return,
        "attempts_median": sorted(attempts)[len(attempts) // 2] if attempts else None,
        "failures": failures,
        "target_p50_ms": TARGET_P50_MS,
        "target_p99_ms": TARGET_P99_MS,
        "met": total is not None
        and total.p50 <= TARGET_P50_MS
        and total.p99 <= TARGET_P99_MS
        and not failures,
    }
