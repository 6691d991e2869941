"""Qubes' own firewall of a network qube, run for real in a lab qube: no emulation.

From the pinned qubes-core-agent-linux: the base rules (`network/qubes-antispoof.nft`, then
`qubes-ipv4.nft` and `qubes-ipv6.nft` or `qubes-ipv6-disabled.nft`, loaded with `nft -f` in
the order of `qubes-antispoof.service` and `qubes-iptables start`), and the qubes-firewall
worker (`qubesagent/firewall.py`, `python -m qubesagent.firewall` as its unit runs it) in
the qube's network and mount namespaces, on the qube's real QubesDB; and Qubes' hotplug
script for a downstream vif (`network/vif-route-qubes`), with stand-ins for Xen's parts.
"""

import ipaddress
import os
import shutil
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
HOTPLUG_TIMEOUT = 30.0
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


# Stand-ins for Xen's hotplug environment (which cannot exist here), not for Qubes' script.
XEN_VIF_COMMON = """# Xen's vif-common.sh, reduced to what vif-route-qubes uses.
command=$1
ip=$(xenstore-read "$XENBUS_PATH/ip")
log() { :; }
fatal() { echo "$*" >&2; exit 1; }
success() { :; }
do_without_error() { "$@" || :; }
"""
# Only where the kernel has no flowtables (nf_flow_table): the one nft call of the script that
# makes `inet qubes-nat-accel` is skipped, every other call runs as it is.
NFT_WITHOUT_FLOWTABLES = """#!/bin/sh
case "$*" in
*flowtable*) echo "lab: no flowtables in this kernel: qubes-nat-accel left out" >&2; exit 0;;
esac
exec {nft} "$@"
"""
XENSTORE_READ = """#!/bin/sh
# xenstore-read of the lab: each key is a file under $XENSTORE_DIR.
[ "$1" = -- ] && shift
exec cat "$XENSTORE_DIR/$1"
"""


def vif_online(
    qube: QubeSide,
    vif: str,
    addresses: Sequence[IPAddress],
    peer_mac: str,
    workdir: Path,
) -> None:
    """Run Qubes' own `network/vif-route-qubes online` for a downstream vif, as Xen's
    hotplug does in the netvm: antispoof set elements, group 2, neighbour, route, the
    gateway address (QubesDB's `/qubes-netvm-gateway`) and the `qubes-nat-accel` flowtable.
    Only Xen's parts are stood in for: its `vif-common.sh` and `xenstore-read`."""
    hotplug, xenstore, tools = workdir / "hotplug", workdir / "xenstore", workdir / "bin"
    for folder in (hotplug, tools):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source_tree(AGENT_LINUX) / "network" / "vif-route-qubes", hotplug)
    (hotplug / "vif-common.sh").write_text(XEN_VIF_COMMON)
    (tools / "xenstore-read").write_text(XENSTORE_READ)
    (tools / "xenstore-read").chmod(0o755)
    if not has_flowtables(qube):
        nft = shutil.which("nft") or "/usr/sbin/nft"
        (tools / "nft").write_text(NFT_WITHOUT_FLOWTABLES.replace("{nft}", nft))
        (tools / "nft").chmod(0o755)
    backend = f"backend/vif/{vif.removeprefix('vif').replace('.', '/')}"
    keys = {"ip": " ".join(str(a) for a in addresses), "mac": peer_mac, "type": "vif"}
    for key, value in keys.items():
        (xenstore / backend).mkdir(parents=True, exist_ok=True)
        (xenstore / backend / key).write_text(value)
    env = dict(qube.env)
    env.update(
        PATH=f"{tools}:{env['PATH']}",
        vif=vif,
        XENBUS_PATH=backend,
        XENSTORE_DIR=str(xenstore),
        LC_ALL="C",
    )
    done = subprocess.run(
        qube.command(["bash", str(hotplug / "vif-route-qubes"), "online"]),
        env=env,
        capture_output=True,
        text=True,
        timeout=HOTPLUG_TIMEOUT,
    )
    if done.returncode != 0:
        raise StockFirewallError(
            f"vif-route-qubes online {vif} in {qube.name}: {(done.stdout + done.stderr).strip()}"
        )


def has_flowtables(qube: QubeSide) -> bool:
    """Whether this kernel makes nft flowtables (a probe table, removed in the same go)."""
    probe = "table inet qubes-lab-probe {\n flowtable f {\n  hook ingress priority 0\n }\n}\n"
    made = qube.run(["nft", "-f", "-"], input=probe)
    qube.run(["nft", "delete", "table", "inet", "qubes-lab-probe"])
    return made.returncode == 0


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
