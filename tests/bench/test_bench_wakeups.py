"""Wakeups at rest: context switches read from /proc status text, compared across a window."""

import os

import pytest

from bench.wakeups import context_switches, task_switches, wakeups_between

STATUS = """Name:\tpython3
State:\tS (sleeping)
Tgid:\t4242
Threads:\t1
voluntary_ctxt_switches:\t1507
nonvoluntary_ctxt_switches:\t23
"""


def test_both_kinds_of_switch_are_counted() -> None:
    assert context_switches(STATUS) == 1530


def test_a_status_without_the_counts_is_refused() -> None:
    with pytest.raises(ValueError):
        context_switches("Name:\tpython3\nvoluntary_ctxt_switches:\t3\n")


def test_a_sleeping_process_has_no_wakeups() -> None:
    assert wakeups_between({10: 5, 11: 7}, {10: 5, 11: 7}) == 0


def test_growth_born_and_ended_threads_all_count() -> None:
    before = {10: 5, 11: 7, 12: 1}
    after = {10: 9, 11: 7, 13: 3}  # 10 woke 4 times, 12 ended, 13 was born and ran 3 times
    assert wakeups_between(before, after) == 4 + 1 + 3


def test_a_reused_thread_id_never_counts_negative() -> None:
    assert wakeups_between({10: 50}, {10: 2}) == 0


def test_this_process_is_read_from_proc() -> None:
    counts = task_switches(os.getpid())
    assert os.getpid() in counts
    assert all(count >= 0 for count in counts.values())
