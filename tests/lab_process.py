"""Servers a lab test runs in a qube: started, waited for until they listen, and stopped by
their own PID (never by name), also when the test fails."""

import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qubes_lab.builder import Lab

LISTEN_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
POLL = 0.02


def listening(lab: Lab, host: str, port: int) -> bool:
    """Whether something in `host` listens on TCP `port`."""
    out = lab.run(host, ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
    return f":{port}" in out.stdout


def stop(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextmanager
def tcp_server(
    lab: Lab, host: str, argv: Sequence[str], port: int, cwd: Path | str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` running in `host`, once it listens on TCP `port`; stopped at the end."""
    server = lab.popen(
        host, list(argv), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not listening(lab, host, port):
            assert server.poll() is None, f"{argv[0]} in {host} exited"
            assert time.monotonic() < deadline, f"{argv[0]} in {host} not listening on {port}"
            time.sleep(POLL)
        yield server
    finally:
        stop(server)
