"""The bench's waiting prober against the kernel: overlapping attempts find a service that
opens while they wait, and leave no socket behind."""

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.bench.conftest import REPO_ROOT
from tests.nft.lab import make_netns, nft, run

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

PORT = 40123
DROP = f"""table inet probe-test {{
  chain input {{ type filter hook input priority -10; tcp dport {PORT} drop; }}
}}"""
# Drops the first SYNs, then the table goes: the prober must find the service afterwards.
SCRIPT = """
import json, os, subprocess, sys, threading, time
sys.path.insert(0, sys.argv[4])
from bench.probe import wait_for_service
port, delay, drop = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "drop"
def reopen():
    time.sleep(delay)
    subprocess.run(["nft", "delete", "table", "inet", "probe-test"], check=True, timeout=30)
if drop and delay >= 0:
    threading.Thread(target=reopen).start()
before = len(os.listdir("/proc/self/fd"))
found = wait_for_service("127.0.0.1", port, 0.3 if drop and delay < 0 else 10.0)
found["fds_left"] = len(os.listdir("/proc/self/fd")) - before
print(json.dumps(found))
"""


def _serve(ns: str) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.probe", "serve"]
    return subprocess.Popen([*argv, "--port", str(PORT)], cwd=REPO_ROOT, text=True)


def _wait(ns: str, delay: float, drop: bool) -> dict[str, object]:
    argv = [str(PORT), str(delay), "drop" if drop else "open", REPO_ROOT]
    return json.loads(run(ns, sys.executable, "-c", SCRIPT, *argv))


@pytest.mark.parametrize("delay", [0.2, -1.0], ids=["opens-while-waiting", "never-opens"])
def test_overlapping_attempts_find_the_service_once_it_opens(
    make_netns: Callable[[], str], delay: float
) -> None:
    ns = make_netns()
    run(ns, "ip", "link", "set", "lo", "up")
    server = _serve(ns)
    try:
        # Refused while the server starts, then found.
        assert _wait(ns, 0.0, drop=False)["ok"] is True
        nft(ns, "-f", "-", stdin=DROP)
        found = _wait(ns, delay, drop=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert found["ok"] is (delay >= 0)
    # Each dropped SYN cost no wait: several attempts were in flight before the reopening.
    assert int(found["attempts"]) > 1
    assert found["fds_left"] == 0
