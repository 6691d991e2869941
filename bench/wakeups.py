"""Wakeups of a process: context switches of all its threads and descendants, from /proc.

A thread that sleeps on an event and sees none is never scheduled, so its switch counts stay
put; any timer or poll loop moves them. Reading /proc does not wake the process read.
"""

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from .processes import descendants

SWITCH_FIELDS = ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")


def context_switches(status_text: str) -> int:
    """Voluntary + nonvoluntary switches from one /proc/<pid>/task/<tid>/status text."""
    total = 0
    found = 0
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name in SWITCH_FIELDS:
            total += int(value.split()[0])
            found += 1
    if found != len(SWITCH_FIELDS):
        raise ValueError("status text without both context switch counts")
    return total


def task_switches(pid: int) -> dict[int, int]:
    """Switches per thread id of pid and its live descendants (tids are unique host-wide)."""
    counts: dict[int, int] = {}
    for member in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):  # a descendant may exit while it is read
            for tid in os.listdir(f"/proc/{member}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{member}/task/{tid}/status").read_text()
                    counts[int(tid)] = context_switches(text)
    return counts


def wakeups_between(before: Mapping[int, int], after: Mapping[int, int]) -> int:
    """Switches over a window: growth of every thread, all of a thread born in it, and one for
    each thread that ended in it (its last counts are lost, but it ran)."""
    grown = sum(max(0, count - before.get(tid, 0)) for tid, count in after.items())
    ended = sum(1 for tid in before if tid not in after)
    return grown + ended
