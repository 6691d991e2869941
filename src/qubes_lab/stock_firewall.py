"""Qubes' own firewall of a network qube, run for real in a lab qube: no emulation.

From the pinned qubes-core-agent-linux: the base rules (`network/qubes-antispoof.nft`, then
`qubes-ipv4.nft` and `qubes-ipv6.nft` or `qubes-ipv6-disabled.nft`, loaded with `nft -f` in
the order of `qubes-antispoof.service` and `qubes-iptables start`), and the qubes-firewall
worker (`qubesagent/firewall.py`, `python -m qubesagent.firewall` as its unit runs it) in
the qube's network and mount namespaces, on the qube's real QubesDB. What Xen's hotplug
script `vif-route-qubes` does for a downstream vif is done here by `attach_vif`.
"""

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .qubesdb_real import QubeSide
from .upstream import source_tree

AGENT_LINUX = "qubes-core-agent-linux"
START_TIMEOUT = 10.0  # until the worker's process shows inside the namespace
STOP_TIMEOUT = 5.0  # SIGTERM, then SIGKILL
POLL = 0.02
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class StockFirewallError(RuntimeError):
    """Qubes' base rules did not load, or the worker did not start."""


def base_rule_files(ipv6: bool) -> list[Path]:
    """Qubes' nft files in the order a network qube loads them at boot."""
    network = source_tree(AGENT_LINUX) / "network"
    names = ["qubes-antispoof.nft", "qubes-ipv4.nft"]
    names.append("qubes-ipv6.nft" if ipv6 else "qubes-ipv6-disabled.nft")
    return [network / name for name in names]


def load_base_rules(qube: QubeSide, *, ipv6: bool = True) -> None:
    """`nft -f` each of Qubes' files inside the qube, unchanged."""
    for path in base_rule_files(ipv6):
        done = qube.run(["nft", "-f", str(path)])
        if done.returncode != 0:
            raise StockFirewallError(f"nft -f {path.name} in {qube.name}: {done.stderr.strip()}")


def attach_vif(qube: QubeSide, vif: str, addresses: Sequence[IPAddress]) -> None:
    """What `vif-route-qubes online` leaves in the netvm's nftables for a downstream qube:
    its addresses in `qubes`' antispoof sets, and the vif in interface group 2."""
    lines = []
    for address in addresses:
        ip = "ip" if address.version == 4 else "ip6"
        lines += [
            f'add element {ip} qubes allowed {{ "{vif}" . {address} }}',
            f"add element {ip} qubes downstream {{ {address} }}",
        ]
    done = qube.run(["nft", "-f", "-"], input="\n".join(lines) + "\n")
    if done.returncode != 0:
        raise StockFirewallError(f"antispoof sets for {vif} in {qube.name}: {done.stderr}")
    grouped = qube.run(["ip", "link", "set", "dev", vif, "group", "2", "up"])
    if grouped.returncode != 0:
        raise StockFirewallError(f"{vif} into group 2 in {qube.name}: {grouped.stderr}")


def worker_env(qube: QubeSide) -> dict[str, str]:
    """The qube's environment (the built `qubesdb` binding first) plus Qubes' agent sources."""
    env = dict(qube.env)
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{source_tree(AGENT_LINUX)}"
    env.pop("NOTIFY_SOCKET", None)  # not under systemd: its sd_notify stays silent
    return env


@dataclass(frozen=True)
class QubeProcess:
    """A program running in a qube (its netns, mount and PID namespaces); `stop` by its PID."""

    qube: str
    launcher: subprocess.Popen[bytes]  # nsenter, which waits for the program
    pid: int  # the program's own process, as seen from here
    log: Path

    @classmethod
    def start(
        cls, qube: QubeSide, argv: Sequence[str], env: Mapping[str, str], log: Path
    ) -> "QubeProcess":
        """Start `argv` in `qube`, its output appended to `log`; it shows up or fails here."""
        with log.open("ab") as out:
            launcher = subprocess.Popen(
                qube.command(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + START_TIMEOUT
        while (pid := _only_child(launcher.pid)) is None:
            if launcher.poll() is not None or time.monotonic() > deadline:
                _end(launcher)
                text = log.read_text(errors="replace")[-2000:]
                raise StockFirewallError(f"{argv[-1]} in {qube.name} did not start: {text}")
            time.sleep(POLL)
        return cls(qube.name, launcher, pid, log)

    def running(self) -> bool:
        return self.launcher.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT; the program's exit status (through its
        launcher), None when it had to be killed."""
        if self.launcher.poll() is not None:
            return self.launcher.returncode
        if _only_child(self.launcher.pid) == self.pid:  # still ours: signal it by PID
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.launcher.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            if _only_child(self.launcher.pid) == self.pid:
                os.kill(self.pid, signal.SIGKILL)
            _end(self.launcher)
            return None


def start_worker(qube: QubeSide, log: Path) -> QubeProcess:
    """The real qubes-firewall worker in `qube`, as its unit starts it (on SIGTERM it
    removes its tables and exits 0)."""
    return QubeProcess.start(
        qube, [sys.executable, "-m", "qubesagent.firewall"], worker_env(qube), log
    )


def _only_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(children[0]) if len(children) == 1 else None


def _end(launcher: subprocess.Popen[bytes]) -> None:
    if launcher.poll() is None:
        launcher.kill()
    launcher.wait(timeout=STOP_TIMEOUT)
