"""`up` and `down` leave the host exactly as before, even when `up` was killed halfway;
`down` keeps dom0's state for the next `up`, `down --purge` leaves nothing."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from recovery_lab import PERSONAL_IP, assert_kept, qubes_lab, store_state

from lifecycle_lab import LabUser
from qubes_lab import netns
from qubes_lab.builder import Lab
from qubes_lab.state import load

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
        [sys.executable, "-m", "qubes_lab", "--lab", fresh_lab.name, "up"],
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
        [sys.executable, "-m", "qubes_lab", "--lab", fresh_lab.name, "down", "--purge"],
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


def test_down_keeps_dom0s_state_and_up_brings_every_forward_back(fresh_lab: Lab) -> None:
    before = _host_snapshot()
    user = LabUser(fresh_lab)
    # By the CLI: the lab's processes are then no children of this one (no zombies to reap).
    assert qubes_lab(user, "up").returncode == 0
    stored = store_state(user)
    old_boot = fresh_lab.boot_id_file.read_text()
    down = qubes_lab(user, "down")
    assert down.returncode == 0, down.stderr
    assert "dom0's state kept" in down.stdout
    # Only dom0's state and the topology it belongs to are left: no namespace, no process.
    assert _traces_of(fresh_lab.name) == [str(fresh_lab.state_dir)]
    assert sorted(p.name for p in fresh_lab.state_dir.iterdir()) == ["admin", "topology.toml"]
    assert _host_snapshot() == before

    up = qubes_lab(user, "up")
    assert up.returncode == 0, up.stderr
    assert "with dom0's state kept" in up.stdout
    assert fresh_lab.status().healthy
    assert_kept(user, stored)
    # A new boot of the host, each qube started with the properties dom0 has for it.
    assert fresh_lab.boot_id_file.read_text() != old_boot
    shown = fresh_lab.run("personal", ["ip", "-4", "-br", "addr"], capture_output=True, text=True)
    assert PERSONAL_IP in shown.stdout

    purge = qubes_lab(user, "down", "--purge")
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout == f"lab {fresh_lab.name}: down\n"
    assert _traces_of(fresh_lab.name) == []
    assert _host_snapshot() == before


def test_up_refuses_another_topology_on_kept_state(fresh_lab: Lab, tmp_path: Path) -> None:
    fresh_lab.up()
    user = LabUser(fresh_lab)
    assert qubes_lab(user, "down").returncode == 0
    kept = sorted(str(p) for p in fresh_lab.state_dir.rglob("*"))
    other = tmp_path / "other.toml"
    text = (fresh_lab.state_dir / "topology.toml").read_text()
    other.write_text(text.replace("qid = 9", "qid = 19"))
    refused = qubes_lab(user, "up", "--topology", str(other))
    assert refused.returncode != 0
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and "topology" in lines[0] and "--purge" in lines[0], refused.stderr
    assert sorted(str(p) for p in fresh_lab.state_dir.rglob("*")) == kept
