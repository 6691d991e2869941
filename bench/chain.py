"""The bench's namespaces (`qpt-bench-<pid>-<host>`): made, used and deleted by exact name."""

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import layout, rulesets
from .processes import BenchError, ProcessSet, wait_until

COMMAND_TIMEOUT = 120.0
READY_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parent.parent
CONGESTION = "cubic"  # forced on every socket: namespaces inherit the host's default (bbr)
RELAY_BUFFER = 131072  # socat's block size; 128 KiB is the relay's best case (LAB-NOTES)


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
    try:
        result = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv[:6])}: no answer within {timeout} s") from None
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv[:6])}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def probe_argv(*args: str) -> list[str]:
    """`python -m bench.probe …`; the probe runs inside a namespace, from the repository."""
    return [sys.executable, "-m", "bench.probe", *args]


class Chain:
    """lan -- net -- fw -- work, Qubes' base rules loaded; `down` undoes everything."""

    def __init__(self, tag: str = "") -> None:
        self.prefix = f"qpt-bench-{os.getpid()}{tag}"
        self.processes = ProcessSet()
        self._made: list[str] = []

    def netns(self, host: str) -> str:
        return layout.netns_name(self.prefix, host)

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def run(self, host: str, argv: Sequence[str], *, stdin: str | None = None) -> str:
        return run(self.exec_argv(host, argv), stdin=stdin)

    def start(self, host: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("cwd", str(REPO_ROOT))
        return self.processes.start(self.exec_argv(host, argv), **kwargs)

    def load(self, host: str, script: str) -> float:
        """`nft -f -` as one transaction; the seconds it took."""
        started = time.perf_counter()
        self.run(host, ["nft", "-f", "-"], stdin=script)
        return time.perf_counter() - started

    def flush_conntrack(self) -> None:
        """Each config starts with empty connection tables (per namespace, never the host's)."""
        for host in ("net", "fw", "work"):
            subprocess.run(
                self.exec_argv(host, ["conntrack", "-F"]),
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )

    def up(self) -> None:
        try:
            for host in layout.HOSTS:
                run(["ip", "netns", "add", self.netns(host)])
                self._made.append(self.netns(host))
                run(["ip", "-n", self.netns(host), "link", "set", "lo", "up"])
            for link in layout.LINKS:
                netns_a = self.netns(link.host_a)
                run(["ip", "-n", netns_a, "-batch", "-"], stdin=link.command(self.prefix) + "\n")
            for host, commands in layout.ip_commands().items():
                run(["ip", "-n", self.netns(host), "-batch", "-"], stdin="\n".join(commands) + "\n")
            for host, settings in layout.sysctls().items():
                if settings:
                    pairs = [f"{k}={v}" for k, v in settings.items()]
                    self.run(host, ["sysctl", "-q", "-w", *pairs])
            self.load("net", rulesets.edge_script(rulesets.Design.MAP, 1))
            self.load("fw", rulesets.firewall_script())
            self.load("work", rulesets.target_script())
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        self.processes.stop_all()
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
        self._made.clear()

    # -- services -------------------------------------------------------------------------

    def listening(self, host: str, port: int) -> bool:
        out = self.run(host, ["ss", "-Hltn", f"sport = :{port}"])
        return bool(out.strip())

    def start_listener(self, host: str, port: int, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        process = self.start(host, argv)
        wait_until(lambda: self.listening(host, port), READY_TIMEOUT, f"{argv[0]} on {host}:{port}")
        return process

    def start_latency_server(self, host: str = "work", port: int = layout.LATENCY_PORT) -> None:
        self.start_listener(host, port, probe_argv("serve", "--port", str(port)))

    def start_iperf_server(self, host: str = "work", port: int = layout.IPERF_PORT) -> None:
        self.start_listener(host, port, ["iperf3", "-s", "-p", str(port)])

    def start_relays(self) -> None:
        """socat at net and fw for both services: what a user-space port forward does."""
        for service in (layout.LATENCY_PORT, layout.IPERF_PORT):
            port = service + layout.RELAY_PORT_OFFSET
            for host, listen, onward, onward_port in (
                ("fw", layout.FW, layout.WORK, service),
                ("net", layout.EDGE_LAN, layout.FW, port),
            ):
                cc = f"setsockopt-string=6:13:{CONGESTION}"  # SOL_TCP, TCP_CONGESTION
                argv = [
                    "socat",
                    "-b",
                    str(RELAY_BUFFER),
                    f"TCP-LISTEN:{port},bind={listen},fork,reuseaddr,{cc}",
                    f"TCP:{onward}:{onward_port},{cc}",
                ]
                self.start_listener(host, port, argv)
