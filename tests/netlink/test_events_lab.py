"""Kernel notifications in a namespace of the test's own: a change wakes, quiet does not."""

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.nft.lab import make_netns, run

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

# Runs inside the namespace: subscribes, says so, then reports each wait's outcome.
WATCHER = """
import asyncio, sys
from qubes_portfwd.netlink import events as kernel

async def main():
    with getattr(kernel, sys.argv[2])() as events:
        print("subscribed", flush=True)
        for _ in range(2):
            sys.stdin.readline()
            try:
                await asyncio.wait_for(events.next_change(), float(sys.argv[1]))
                print("changed", flush=True)
            except TimeoutError:
                print("quiet", flush=True)

asyncio.run(main())
"""
QUIET_WAIT = "1.0"  # how long the watcher listens when nothing should arrive
ANSWER_TIMEOUT = 15.0


def _ask(watcher: subprocess.Popen[str]) -> str:
    assert watcher.stdin is not None and watcher.stdout is not None
    watcher.stdin.write("\n")
    watcher.stdin.flush()
    return watcher.stdout.readline().strip()


@pytest.mark.parametrize(
    ("source", "change"),
    [
        ("ruleset_events", ["nft", "add", "table", "ip", "qpt-events"]),
        ("network_events", ["ip", "addr", "add", "192.0.2.9/24", "dev", "lo"]),
        ("network_events", ["ip", "-6", "route", "add", "2001:db8::/64", "dev", "lo"]),
    ],
)
def test_a_change_wakes_the_watcher_and_quiet_does_not(
    make_netns: Callable[[], str], source: str, change: list[str]
) -> None:
    ns = make_netns()
    watcher = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", WATCHER, QUIET_WAIT, source],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "subscribed"
        assert _ask(watcher) == "quiet"
        # A change made before the wait is queued, so the next wait returns at once.
        run(ns, *change)
        assert _ask(watcher) == "changed"
        assert watcher.wait(ANSWER_TIMEOUT) == 0
    finally:
        watcher.kill()
        watcher.wait(ANSWER_TIMEOUT)
