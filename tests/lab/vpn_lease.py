"""Helpers for the VPN-lease lab tests: the CLI as a user runs it, and public endpoints."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qubes_lab.builder import Lab

CLI_TIMEOUT = 60.0
FORWARD_PORT = 80  # the forward's port on the tunnel interface
SERVICE_PORT = 8080  # where vpn-work listens
POLL = 0.1
T = TypeVar("T")


def cli(lab: Lab, *argv: str) -> str:
    """qvm-portfwd in its own process against the lab's admin service; fails on error."""
    env = {**os.environ, "QUBESD_SOCKET": str(lab.admin_socket)}
    done = subprocess.run(
        [sys.executable, "-m", "qubes_portfwd.cli.qvm_portfwd", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def add_vpn_forward(lab: Lab) -> str:
    """`qvm-portfwd add vpn-work tcp 80:8080 --external --from any`; returns its id."""
    forward = f"{FORWARD_PORT}:{SERVICE_PORT}"
    return cli(lab, "add", "vpn-work", "tcp", forward, "--external", "--from", "any").strip()


def listed(lab: Lab, forward_id: str) -> dict[str, Any] | None:
    """The forward as `qvm-portfwd list --json` shows it (None once it is gone)."""
    for item in json.loads(cli(lab, "list", "vpn-work", "--json")):
        if item["id"] == forward_id:
            return item
    return None


def public_endpoint(lab: Lab, forward_id: str) -> tuple[str, int] | None:
    item = listed(lab, forward_id)
    if item is None or not item.get("public"):
        return None
    (endpoint,) = item["public"]
    assert (endpoint["proto"], endpoint["port"]) == ("tcp", FORWARD_PORT)
    return endpoint["address"], endpoint["public_port"]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """Poll `probe` until it returns something other than None; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(POLL)


def log_count(path: str | Path, needle: str) -> int:
    try:
        return Path(path).read_text(errors="replace").count(needle)
    except FileNotFoundError:
        return 0
