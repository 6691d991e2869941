"""The machine the numbers were taken on: CPU, cores, kernel, tool versions, date, load."""

import os
import platform
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any


def _version(argv: list[str], marker: str) -> str:
    """The first line of a tool's output that holds `marker` (its version line)."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (result.stdout + result.stderr).splitlines()
    return next((line.strip() for line in lines if marker in line), "unknown")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def describe(now: datetime) -> dict[str, Any]:
    return {
        "date": now.isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_mib": _memory_mib(),
        "kernel": platform.release(),
        "nft": _version(["nft", "--version"], "nftables"),
        "iperf3": _version(["iperf3", "--version"], "iperf"),
        "socat": _version(["socat", "-V"], "socat version").split(" on ")[0],
        "python": platform.python_version(),
        "host_tcp_congestion": Path("/proc/sys/net/ipv4/tcp_congestion_control")
        .read_text()
        .strip(),
        "load_average_at_start": list(os.getloadavg()),
    }
