"""Throwaway network namespaces for the nft lab tests (names `qpt-nft-<pid>-<n>`)."""

import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

_counter = itertools.count()


def run(ns: str, *argv: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {ns} failed: {result.stderr}")
    return result.stdout


def nft(ns: str, *args: str, stdin: str | None = None) -> str:
    return run(ns, "nft", *args, stdin=stdin)


def rule_counts(ns: str) -> dict[str, int]:
    """Rules in every chain: `family table chain` -> count."""
    items = json.loads(nft(ns, "-j", "list", "ruleset"))["nftables"]
    counts: dict[str, int] = {}
    for item in items:
        if "chain" in item:
            c = item["chain"]
            counts.setdefault(f"{c['family']} {c['table']} {c['name']}", 0)
        if "rule" in item:
            r = item["rule"]
            key = f"{r['family']} {r['table']} {r['chain']}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling interval of a bounded wait, not a wait for a condition


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Creates namespaces on demand; deletes exactly those, whatever the test did."""
    created: list[str] = []

    def make() -> str:
        name = f"qpt-nft-{os.getpid()}-{next(_counter)}"
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
        created.append(name)
        run(name, "ip", "link", "set", "lo", "up")
        return name

    yield make
    for name in reversed(created):
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
