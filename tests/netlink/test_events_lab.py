"""Kernel notifications in a namespace of the test's own: a change wakes, quiet does not."""

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.nft.lab import make_netns, run

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

# Runs inside the namespace: subscribes, says so, then reports each wait's outcome with
# the weight the source returned. `weighed` (others' ruleset changes) weighs each change by
# its table's name.
WATCHER = """
import asyncio, sys
from qubes_portfwd.netlink import events as kernel

WEIGHTS = {"qpt-light": 0, "qpt-heavy": 2}

def subscribe(source):
    if source == "weighed":
        return kernel.others_ruleset_events(weigh=lambda c: WEIGHTS.get(c.table, 1))
    return getattr(kernel, source)()

async def main():
    with subscribe(sys.argv[2]) as events:
        print("subscribed", flush=True)
        for _ in range(2):
            sys.stdin.readline()
            try:
                weight = await asyncio.wait_for(events.next_change(), float(sys.argv[1]))
                print(f"changed {weight}", flush=True)
            except TimeoutError:
                print("quiet", flush=True)

asyncio.run(main())
"""
QUIET_WAIT = "1.0"  # how long the watcher listens when nothing should arrive
ANSWER_TIMEOUT = 15.0


@contextlib.contextmanager
def _watching(ns: str, script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`script` running in `ns`, once it said it subscribed; killed after, whatever happened."""
    watcher = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, QUIET_WAIT, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "subscribed"
        yield watcher
    finally:
        watcher.kill()
        watcher.wait(ANSWER_TIMEOUT)


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
    with _watching(ns, WATCHER, source) as watcher:
        assert _ask(watcher) == "quiet"
        # A change made before the wait is queued, so the next wait returns at once.
        run(ns, *change)
        assert _ask(watcher) == "changed 1"
        assert watcher.wait(ANSWER_TIMEOUT) == 0


# Commits a change of its own through the agent's libnftables thread, then listens.
OWN_WATCHER = """
import asyncio, sys
from qubes_portfwd.agent.nft_library import NftLibrary
from qubes_portfwd.netlink import events as kernel

async def main():
    library = NftLibrary()
    with kernel.others_ruleset_events() as others, kernel.ruleset_events() as every:
        print("subscribed", flush=True)
        sys.stdin.readline()
        result = await library.apply("add table ip qpt-own\\n")
        assert result.ok, result.output
        await asyncio.wait_for(every.next_change(), float(sys.argv[1]) * 5)
        print("every: changed", flush=True)
        try:
            await asyncio.wait_for(others.next_change(), float(sys.argv[1]))
            print("others: changed", flush=True)
        except TimeoutError:
            print("others: quiet", flush=True)
        sys.stdin.readline()
        await asyncio.wait_for(others.next_change(), float(sys.argv[1]) * 5)
        print("others: changed", flush=True)
    library.close()

asyncio.run(main())
"""


def test_the_process_own_transactions_are_not_announced_to_it_and_others_are(
    make_netns: Callable[[], str],
) -> None:
    ns = make_netns()
    with _watching(ns, OWN_WATCHER) as watcher:
        assert watcher.stdout is not None
        assert _ask(watcher) == "every: changed"  # the kernel did announce it
        assert watcher.stdout.readline().strip() == "others: quiet"
        run(ns, "nft", "add", "table", "ip", "qpt-someone-else")
        assert _ask(watcher) == "others: changed"
        assert watcher.wait(ANSWER_TIMEOUT) == 0


def test_a_transaction_wakes_with_its_heaviest_change_and_weightless_ones_do_not(
    make_netns: Callable[[], str],
) -> None:
    ns = make_netns()
    with _watching(ns, WATCHER, "weighed") as watcher:
        run(ns, "nft", "add", "table", "ip", "qpt-light")
        assert _ask(watcher) == "quiet"
        script = "add table ip qpt-other\nadd table ip qpt-heavy\nadd chain ip qpt-light c\n"
        run(ns, "nft", "-f", "-", stdin=script)
        assert _ask(watcher) == "changed 2"
        assert watcher.wait(ANSWER_TIMEOUT) == 0
