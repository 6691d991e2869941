"""natd's watch over its input rules wakes on changes to Qubes' `qubes` tables only: the
agent's forwards (its own tables) cost natd no check, a change in `qubes` one check, and a
burst too large to read message by message one check.

natd's loop runs in a process of its own inside the test's namespace, its check counted."""

import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.natd import input_rules
from tests.nft.lab import make_netns, nft

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

# Counts the checks `keep_open` makes; prints the count whenever asked on stdin.
CHILD = """
import asyncio, json, sys
from qubes_portfwd.natd import input_rules

checks = 0

async def counted(self):
    global checks
    checks += 1

input_rules.RuleWatch.check = counted

async def main():
    stop = asyncio.Event()
    task = asyncio.create_task(input_rules.keep_open([5351], [], stop))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        print(json.dumps({"checks": checks}), flush=True)
    stop.set()
    await task

asyncio.run(main())
"""

# Long against natd's settle (input_rules.SETTLE, 0.05 s): a check the agent's changes woke
# would have run by then, apart from the next one. A slower host can only merge the two,
# which hides a regression instead of failing a correct natd.
APART = 0.5
CHECK_TIMEOUT = 10.0


def _checks(child: subprocess.Popen[str]) -> int:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("?\n")
    child.stdin.flush()
    return int(json.loads(child.stdout.readline())["checks"])


def _checks_once_at_least(child: subprocess.Popen[str], count: int) -> int:
    deadline = time.monotonic() + CHECK_TIMEOUT
    while (found := _checks(child)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"natd made {found} checks, not {count}, within {CHECK_TIMEOUT} s")
        time.sleep(0.05)  # polling interval of a bounded wait
    return found


def test_only_changes_to_qubes_tables_wake_a_check(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert _checks_once_at_least(child, 1) == 1  # the check at start
        for n in range(3):  # what the agent commits for each forward, in its own table
            nft(ns, "add", "table", "ip", "qubes-portfwd")
            nft(ns, "add", "chain", "ip", "qubes-portfwd", f"fwd-{n}")
        time.sleep(APART)  # a fixed pause, see APART
        assert _checks(child) == 1
        nft(ns, "add", "rule", "ip", "qubes", "custom-input", "counter")
        _checks_once_at_least(child, 2)
        time.sleep(APART)
        assert _checks(child) == 2  # one check for that change, no more
        nft(ns, "add", "table", "inet", "qubes")  # any family's `qubes` is looked at
        _checks_once_at_least(child, 3)
        # A load too large to read message by message counts whatever it touches (a whole
        # load of the agent's touches its jumps in `qubes` anyway).
        chains = "".join(
            f"add chain ip qubes-portfwd big-{n}\n" for n in range(input_rules.PARSE_AT_MOST + 1)
        )
        time.sleep(APART)
        nft(ns, "-f", "-", stdin=chains)
        _checks_once_at_least(child, 4)
    finally:
        child.kill()
        child.wait(timeout=10)
