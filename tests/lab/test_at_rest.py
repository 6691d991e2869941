"""At rest nothing of ours polls: dom0's service, the agents and natd sleep until an event.

A process that waits only on events is never scheduled while none come, so its threads'
context switches stay put. Another test's forward may expire meanwhile (an event that wakes
the service rightly): a window with every process quiet is enough, and a timer or poll loop
of any period up to the window's length cannot leave one.
"""

import time

import pytest

from bench.wakeups import task_switches, wakeups_between
from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

OURS = ("admind", "agent:", "natd:", "tunnel:")
WINDOW = 6.0  # longer than any timer the service, agents or natd had (5 s)
WINDOWS = 4


def test_no_process_of_ours_wakes_at_rest(lab: Lab) -> None:
    processes = {
        name: pid
        for name, pid, running in lab.status().processes
        if running and name.startswith(OURS)
    }
    assert {"admind", "agent:sys-net", "natd:sys-firewall"} <= set(processes)
    woke: dict[str, int] = {}
    for _ in range(WINDOWS):
        before = {name: task_switches(pid) for name, pid in processes.items()}
        time.sleep(WINDOW)  # the window itself: nothing is waited for
        after = {name: task_switches(pid) for name, pid in processes.items()}
        woke = {
            name: count
            for name in processes
            if (count := wakeups_between(before[name], after[name]))
        }
        if not woke:
            return
    pytest.fail(f"woke in every {WINDOW} s window at rest (switches in the last): {woke}")
