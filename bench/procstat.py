"""Memory and CPU of running processes, read from /proc (by PID, nothing else)."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .processes import descendants

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


def sample_at_rest(pids: dict[str, int], seconds: float) -> dict[str, RestSample]:
    """CPU over a window of `seconds` and memory at its end, for every named process."""
    before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    elapsed = time.monotonic() - started
    return {
        name: RestSample(
            cpu_percent=100.0 * (tree_cpu_seconds(pid) - before[name]) / elapsed,
            rss_kib=rss_kib(pid),
            tree_rss_kib=tree_rss_kib(pid),
            peak_rss_kib=peak_rss_kib(pid),
        )
        for name, pid in pids.items()
    }
