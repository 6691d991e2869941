"""`up` and `down` leave the host exactly as before, even when `up` was killed halfway."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qubes_portfwd.lab import netns
from qubes_portfwd.lab.builder import Lab
from qubes_portfwd.lab.state import load

pytestmark = pytest.mark.lab


def _host_snapshot() -> dict[str, object]:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout

    return {
        "links": out("ip", "-o", "link", "show"),
        "addresses": out("ip", "-o", "addr", "show"),
        "routes": out("ip", "route", "show", "table", "all"),
        "nft": out("nft", "list", "ruleset"),
        "children": sorted(_children_of(os.getpid())),
    }


def _children_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _traces_of(lab_name: str) -> list[str]:
    """Anything on the host still carrying the lab's name: namespaces, files, processes."""
    prefix = f"qlab-{lab_name}-"
    found = [n for n in netns.list_netns() if n.startswith(prefix)]
    if netns.ETC_NETNS.is_dir():
        found += [p.name for p in netns.ETC_NETNS.iterdir() if p.name.startswith(prefix)]
    state_dir = f"/run/qubes-lab/{lab_name}"
    if Path(state_dir).exists():
        found.append(state_dir)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if prefix in cmdline or f"{state_dir}/" in cmdline:
                found.append(f"pid {proc.name}: {cmdline}")
    return found


@pytest.fixture
def fresh_lab() -> Iterator[Lab]:
    lab = Lab(f"u{os.getpid()}")
    yield lab
    lab.down()


def test_up_twice_then_down_leaves_the_host_as_before(fresh_lab: Lab) -> None:
    before = _host_snapshot()
    started = time.monotonic()
    fresh_lab.up()
    print(f"lab up took {time.monotonic() - started:.2f} s")
    first = fresh_lab.status()
    assert first.healthy
    assert _traces_of(fresh_lab.name)
    fresh_lab.up()  # idempotent: the same processes, nothing rebuilt
    assert fresh_lab.status().processes == first.processes
    fresh_lab.down()
    assert _traces_of(fresh_lab.name) == []
    assert _host_snapshot() == before
    fresh_lab.down()  # a second down is harmless


def test_down_cleans_up_after_up_was_killed_halfway(fresh_lab: Lab) -> None:
    before = _host_snapshot()
    up = subprocess.Popen(
        [sys.executable, "-m", "qubes_portfwd.lab", "--lab", fresh_lab.name, "up"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Kill it once it has started processes but before it finished.
        deadline = time.monotonic() + 20
        while True:
            state = load(fresh_lab.state_dir)
            if state is not None and state.processes and not state.complete:
                break
            assert up.poll() is None, "up finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(up.pid, signal.SIGKILL)
    finally:
        up.wait(timeout=10)
    assert _traces_of(fresh_lab.name)
    result = subprocess.run(
        [sys.executable, "-m", "qubes_portfwd.lab", "--lab", fresh_lab.name, "down"],
        timeout=60,
    )
    assert result.returncode == 0
    assert _traces_of(fresh_lab.name) == []
    assert _host_snapshot() == before


def test_a_failed_up_cleans_up_after_itself(fresh_lab: Lab) -> None:
    before = _host_snapshot()
    # A leftover namespace of the lab's own name makes `ip netns add` fail mid-build.
    netns.add(f"qlab-{fresh_lab.name}-lan")
    with pytest.raises(netns.LabCommandError, match="qlab-"):
        fresh_lab.up()
    assert _traces_of(fresh_lab.name) == []
    assert _host_snapshot() == before
