"""Request-to-working-mapping latency: our natd against miniupnpd, same client, same place.

Both servers run in turn in sys-firewall and serve `work` over NAT-PMP (`natpmpc -a`). A
sample starts when natpmpc is started in `work` and ends when a peer's TCP connection to the
returned port gets the service's greeting ("working"). What counts as working must be the
same for both: miniupnpd only rewrites packets arriving at its own outside interface, so the
peer is sys-firewall's uplink neighbour, sys-net, connecting to sys-firewall's address.
natd's mapping is a whole forward (dom0 decides, every hop to the edge opens), so for natd
the LAN client reaching the edge's outside address is measured too: the real use.

For miniupnpd, Qubes' default deny is opened by hand where its own table cannot (NAT-PMP
input, DNATed forwards, work's input for the service port; see `lab/provider_miniupnpd.py`):
the work natd does through dom0 and the agents is done up front, outside the timing.
"""

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qubes_lab import processes as lab_processes
from qubes_lab import provider_miniupnpd, state
from qubes_lab.builder import Lab

from .chain import REPO_ROOT, probe_argv
from .lab_session import LabSession, Prober
from .processes import BenchError
from .report import num, render
from .settings import Settings
from .stats import median, ratio, summarize

CLIENT = "work"
GATEWAY_QUBE = "sys-firewall"
PEER = "sys-net"  # sys-firewall's uplink neighbour: where miniupnpd's mappings work
SERVICE_PORT = 8181
FIRST_PORT = 21000
SAMPLES_PER_REPEAT = 6
ARRIVAL_TIMEOUT = 10.0
NATPMPC_TIMEOUT = "20"
ALLOW_WORK = ["ports=1024-65535 action=allow"]
# A sample makes four requests: natpmpc asks the public address before the mapping, and
# again before the delete. natd's per-client limit is 8 requests/s after a burst of 32
# (natd/dom0.py): samples 0.6 s apart stay under it, as a well-behaved client would. At
# 0.3 s, deletes were refused once the burst was spent and their mappings lived on for
# their 60 s, into the convergence measurement (which then waited for them to expire).
SAMPLE_SPACING = 0.6
MAPPED = "Mapped public port "
DELETE_ATTEMPTS = 10
DELETE_RETRY = 0.5
# The admin service's log lines that mark natd's way through dom0 (admin/__main__.py format).
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ INFO (.*)$")
PUBLISHED = re.compile(r"published \d+ entries to (\S+) ")


@dataclass(frozen=True)
class Sample:
    answered: float  # seconds from starting natpmpc to its answer
    at_gateway: float  # ... to the first connection through sys-firewall that got the greeting
    end_to_end: float | None  # ... from the LAN through the edge (natd only)
    started_at: float = 0.0  # wall clock (time.time()) when natpmpc was started


def _events(log_text: str) -> list[tuple[float, str]]:
    """(wall clock, message) of the admin service's INFO lines (local time, ms)."""
    found = []
    for line in log_text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, match.group(2)))
    return found


def stage_breakdown(log_text: str, samples: Sequence[Sample]) -> dict[str, float]:
    """Median ms per stage of natd's granted requests, read from the admin service's log.

    Stages: natpmpc to dom0 (process start, public address query, natd), dom0 deciding and
    storing until the first level is published, then each level until the next one (its
    agent applying and reporting, as the publisher waits for it), the last level until the
    grant, and the grant back to natpmpc. Samples whose lines are not all found are skipped.
    """
    events = _events(log_text)
    stages: dict[str, list[float]] = {}
    for sample in samples:
        begin, end = sample.started_at, sample.started_at + sample.answered
        window = [(t, m) for t, m in events if begin - 0.002 <= t <= end + 0.002]
        asked = next((t for t, m in window if "admin.vm.portfwd.NatRequest" in m), None)
        levels = [(t, found.group(1)) for t, m in window if (found := PUBLISHED.search(m))]
        granted = next((t for t, m in window if m.startswith("NAT NAT-PMP:")), None)
        if asked is None or granted is None or not levels:
            continue
        marks = [("natpmpc -> dom0", begin, asked), ("dom0: decide, store, plan", asked, None)]
        for qube_time, qube in levels:
            marks[-1] = (marks[-1][0], marks[-1][1], qube_time)
            marks.append((f"level {qube}: agent applies, publisher sees it", qube_time, None))
        marks[-1] = (marks[-1][0], marks[-1][1], granted)
        marks.append(("grant -> natpmpc", granted, end))
        for name, first, last in marks:
            assert last is not None
            stages.setdefault(name, []).append(max(0.0, last - first))
    return {name: median(values) * 1e3 for name, values in stages.items()}


def _natpmpc(lab: Lab, gateway: str, *argv: str) -> str:
    command = ["timeout", NATPMPC_TIMEOUT, "natpmpc", "-g", gateway, *argv]
    done = lab.run(CLIENT, command, capture_output=True, text=True, cwd="/")
    return done.stdout


def _delete(lab: Lab, gateway: str, port: int) -> None:
    """Take the mapping back (lifetime 0), again after a pause if refused: a mapping left
    behind would live on into the next measurement."""
    for _ in range(DELETE_ATTEMPTS):
        answer = _natpmpc(lab, gateway, "-a", str(port), str(SERVICE_PORT), "tcp", "0")
        if MAPPED in answer:  # a delete's answer maps public port 0
            return
        time.sleep(DELETE_RETRY)  # a fixed pause before the next attempt, bounded
    raise BenchError(f"the mapping of port {port} was not deleted in {DELETE_ATTEMPTS} attempts")


def _mapped_port(output: str) -> int | None:
    if MAPPED not in output:
        return None
    return int(output.split(MAPPED, 1)[1].split()[0])


def _sample(
    lab: Lab, gateway: str, wanted: int, peer: Prober, lan: tuple[Prober, str] | None
) -> Sample | None:
    started, started_at = time.monotonic(), time.time()
    output = _natpmpc(lab, gateway, "-a", str(wanted), str(SERVICE_PORT), "tcp", "60")
    answered = time.monotonic() - started
    port = _mapped_port(output)
    if port is None:
        return None
    try:
        through = peer.wait_for(gateway, port, ARRIVAL_TIMEOUT)
        # Inner hops open first, so the LAN path never works before sys-firewall's.
        end = lan[0].wait_for(lan[1], port, ARRIVAL_TIMEOUT) if lan else None
    finally:
        _delete(lab, gateway, port)
    if not through.ok or (end is not None and not end.ok):
        return None
    end_to_end = None if end is None else end.at - started
    return Sample(answered, through.at - started, end_to_end, started_at)


def _paced(count: int, take: Callable[[int], Sample | None]) -> list[Sample | None]:
    """`take(n)` for each n, started at least SAMPLE_SPACING apart (both servers alike)."""
    samples = []
    next_start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, next_start - time.monotonic()))  # a fixed pace, not a condition
        next_start = time.monotonic() + SAMPLE_SPACING
        samples.append(take(n))
    return samples


def _series(samples: list[Sample | None]) -> dict[str, Any]:
    good = [s for s in samples if s is not None]
    ends = [s.end_to_end for s in good if s.end_to_end is not None]
    result: dict[str, Any] = {"failures": len(samples) - len(good)}
    if good:
        result["answered_ms"] = summarize([s.answered for s in good]).scaled(1e3).to_json()
        result["working_ms"] = summarize([s.at_gateway for s in good]).scaled(1e3).to_json()
    if ends:
        result["end_to_end_ms"] = summarize(ends).scaled(1e3).to_json()
    return result


def _prober_in(session: LabSession, host: str) -> Prober:
    argv = ["ip", "netns", "exec", session.lab.netns(host), *probe_argv("wait")]
    process = session.processes.start(
        argv, cwd=str(REPO_ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return Prober(process)  # type: ignore[arg-type]


def _stop_natd(lab: Lab) -> None:
    current = state.load(lab.state_dir)
    process = None if current is None else current.process(f"natd:{GATEWAY_QUBE}")
    if current is not None and process is not None:
        lab_processes.stop(process)  # natd removes its input rules on SIGTERM
        state.save(lab.state_dir, current.without_process(process))


def measure(session: LabSession, settings: Settings) -> dict[str, Any]:
    """natd first (as the lab runs it), then miniupnpd in its place; natd is started again."""
    lab = session.lab
    count = settings.repeats * SAMPLES_PER_REPEAT
    gateway = str(lab.topology[GATEWAY_QUBE].address4)
    edge = str(lab.addresses.edge_lan4)
    session.start_server(CLIENT, SERVICE_PORT)
    peer = _prober_in(session, PEER)
    lan = session.prober()
    client = session.client()
    lab.natd_url(GATEWAY_QUBE)
    client.nat_policy_set(CLIENT, ALLOW_WORK)
    try:
        natd = _paced(count, lambda n: _sample(lab, gateway, FIRST_PORT + n, peer, (lan, edge)))
    finally:
        client.nat_policy_set(CLIENT, [])
    _stop_natd(lab)
    try:
        provider_miniupnpd.start_gateway(lab, GATEWAY_QUBE, CLIENT, SERVICE_PORT)
        try:
            first = FIRST_PORT + count
            mini = _paced(count, lambda n: _sample(lab, gateway, first + n, peer, None))
        finally:
            provider_miniupnpd.stop_gateway(lab, GATEWAY_QUBE, CLIENT)
    finally:
        lab.start_natd(GATEWAY_QUBE)
        lab.natd_url(GATEWAY_QUBE)
    admin_log = lab.state_dir / "logs" / "admind.log"
    granted = [s for s in natd if s is not None]
    result: dict[str, Any] = {
        "samples": count,
        "client": CLIENT,
        "server_in": GATEWAY_QUBE,
        "working_from": f"{PEER} to {GATEWAY_QUBE}'s address; natd also lan to the edge",
        "natd": _series(natd),
        "miniupnpd": _series(mini),
        "natd_stages_ms": stage_breakdown(admin_log.read_text(errors="replace"), granted),
    }
    result["ratio_working_p50"] = ratio(_p50(result["natd"]), _p50(result["miniupnpd"]))
    return result


def _p50(series: dict[str, Any], key: str = "working_ms") -> float | None:
    summary = series.get(key)
    return None if summary is None else summary["p50"]


def nat_latency_lines(section: dict[str, Any]) -> list[str]:
    """The report's rows: answered and working latency per server, and natd / miniupnpd."""
    rows = []
    for label, series, key in (
        (f"natd, {PEER} -> {GATEWAY_QUBE}", section["natd"], "working_ms"),
        (f"miniupnpd, {PEER} -> {GATEWAY_QUBE}", section["miniupnpd"], "working_ms"),
        ("natd, lan -> edge (end to end)", section["natd"], "end_to_end_ms"),
    ):
        working = series.get(key)
        rows.append(
            [
                label,
                num(_p50(series, "answered_ms"), 1),
                num(None if working is None else working["p50"], 1),
                num(None if working is None else working["p99"], 1),
                str(series["failures"]),
            ]
        )
    headers = ["server, connection", "answered p50 ms", "working p50 ms", "p99 ms", "failed"]
    return [
        f"NAT-PMP request to working mapping, client {section['client']}, "
        f"{section['samples']} samples each",
        *render(headers, rows),
        f"  natd / miniupnpd (working p50) = {num(section['ratio_working_p50'], 1)}",
        "  where natd's time goes (median ms):",
        *render(
            ["stage", "ms"],
            [[stage, num(ms, 0)] for stage, ms in section.get("natd_stages_ms", {}).items()],
            indent="    ",
        ),
    ]
