"""PCP over IPv6 in the lab: the test's own RFC 6887 client in a qube, the forward's hops as
dom0 reports them and as the agents' entries hold them, and a LAN client reaching it."""

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from natd_lab import NatLab

from qubes_portfwd.model.forward_status import ForwardState, ForwardStatus, HopState

CLIENT = Path(__file__).with_name("pcp_wire_client.py")
CLIENT_TIMEOUT = 40
APPLY_TIMEOUT = 15.0
POLL = 0.01
ENTRY_PREFIX = "/qubes-portfwd/"


@dataclass(frozen=True)
class PcpReply:
    result: int
    lifetime: int
    port: int
    address: str
    internal: int
    seconds: float


def gateway(env: NatLab, family: int) -> str:
    qube = env.lab.topology["sys-firewall"]
    return str(qube.address6 if family == 6 else qube.address4)


def pcp_map(
    env: NatLab, family: int, internal: int, external: int, lifetime: int, host: str = "work"
) -> PcpReply | None:
    """One MAP from `host` to its gateway in `family`; None when the gateway stayed silent."""
    argv = [sys.executable, str(CLIENT), gateway(env, family), "tcp"]
    argv += [str(internal), str(external), str(lifetime)]
    done = env.lab.run(host, argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout)
    if fields["result"] is None:
        return None
    keys = ("result", "lifetime", "port", "address", "internal", "seconds")
    return PcpReply(**{k: fields[k] for k in keys})


def pcp_map_background(
    env: NatLab, family: int, internal: int, external: int, lifetime: int
) -> subprocess.Popen[str]:
    argv = [sys.executable, str(CLIENT), gateway(env, family), "tcp"]
    argv += [str(internal), str(external), str(lifetime)]
    return env.lab.popen("work", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def nat_status(env: NatLab, qube: str, family: int) -> list[ForwardStatus]:
    """`qube`'s forwards made by NAT traversal in `family`, as dom0 reports them."""
    return [
        s for s in env.client.forwards_of(qube) if s.family == family and "comment=PCP" in s.rule
    ]


def wait_applied(env: NatLab, qube: str, family: int) -> None:
    """Until dom0 reports the one NAT forward of `family` active with every hop applied."""
    deadline = time.monotonic() + APPLY_TIMEOUT
    while True:
        found = nat_status(env, qube, family)
        if len(found) == 1:
            status = found[0]
            applied = all(h.state == HopState.APPLIED for h in status.hops)
            if status.state == ForwardState.ACTIVE and applied:
                return
        assert time.monotonic() < deadline, f"not applied in {APPLY_TIMEOUT} s: {found}"
        time.sleep(POLL)


def hop_entries(env: NatLab, forward_id: str, family: int) -> dict[str, str]:
    """Each qube's entry of the forward in `family` (its key ends in /4 or /6)."""
    entries = {}
    for qube in ("sys-net", "sys-firewall", "work"):
        keys = env.lab.store(qube).read()[1]
        key = f"{ENTRY_PREFIX}{forward_id}/{family}"
        if key in keys:
            entries[qube] = keys[key]
    return entries


def median_ms(values: list[float]) -> float:
    return round(1000 * statistics.median(values), 1)
