"""Memory and CPU of running processes, read from /proc (by PID, nothing else)."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .processes import descendants
from .wakeups import task_switches, wakeups_between

TICKS = os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The process's high-water mark of resident memory since it started."""
    return _status_kib(pid, "VmHWM")


def tree_rss_kib(pid: int) -> int:
    """Resident memory of pid and its live descendants (an agent's `nft monitor`)."""
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            total += rss_kib(member)
        except OSError:
            continue
    return total


def _cpu_ticks(pid: int, with_children: bool) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime are fields 14-17 of stat (11-14 after the name).
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if with_children else 0)


def tree_cpu_seconds(pid: int) -> float:
    """CPU of pid, its reaped children (nft runs) and its live descendants."""
    ticks = _cpu_ticks(pid, with_children=True)
    for member in descendants(pid):
        try:
            ticks += _cpu_ticks(member, with_children=True)
        except OSError:
            continue
    return ticks / TICKS


@dataclass(frozen=True)
class RestSample:
    cpu_percent: float  # of one CPU, children included
    rss_kib: int
    tree_rss_kib: int
    peak_rss_kib: int
    wakeups: int = 0  # context switches of its threads and descendants over the window
    wakeups_per_s: float = 0.0


def sample_at_rest(pids: dict[str, int], seconds: float) -> dict[str, RestSample]:
    """CPU and wakeups over a window of `seconds`, memory at its end, for every named process."""
    switches = {name: task_switches(pid) for name, pid in pids.items()}
    before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    elapsed = time.monotonic() - started
    samples = {}
    for name, pid in pids.items():
        cpu = tree_cpu_seconds(pid)
        woke = wakeups_between(switches[name], task_switches(pid))
        samples[name] = RestSample(
            cpu_percent=100.0 * (cpu - before[name]) / elapsed,
            rss_kib=rss_kib(pid),
            tree_rss_kib=tree_rss_kib(pid),
            peak_rss_kib=peak_rss_kib(pid),
            wakeups=woke,
            wakeups_per_s=woke / elapsed,
        )
    return samples
