"""Run the NAT-PMP lease keeper (`qubes_portfwd.tunnel`) in a lab's tunnel qube, tracked by PID."""

import sys
from typing import TYPE_CHECKING

from qubes_portfwd.natpmp import wire

from . import processes, state

if TYPE_CHECKING:
    from .builder import Lab


def role(qube: str) -> str:
    return f"tunnel-keeper:{qube}"


def start(
    lab: "Lab", qube: str, lifetime: int = wire.RECOMMENDED_LIFETIME
) -> processes.TrackedProcess:
    """Start the keeper in `qube` against the lab provider; `lab.down()` stops it."""
    argv = [sys.executable, "-m", "qubes_lab.roots.tunnel", "--qube", qube]
    argv += ["--store", str(lab.store(qube).path)]
    argv += ["--gateway", str(lab.addresses.provider_tunnel4), "--lifetime", str(lifetime)]
    log_path = lab.state_dir / "logs" / f"tunnel-keeper-{qube}.log"
    process = processes.spawn(role(qube), lab.netns(qube), argv, log_path)
    current = state.load(lab.state_dir)
    assert current is not None, "the lab is not up"
    state.save(lab.state_dir, current.with_process(process))
    return process


def stop(lab: "Lab", qube: str) -> None:
    """SIGTERM: the keeper gives its mappings back before it exits."""
    current = state.load(lab.state_dir)
    process = None if current is None else current.process(role(qube))
    if current is not None and process is not None:
        processes.stop(process, grace=processes.STOP_GRACE * 3)
        state.save(lab.state_dir, current.without_process(process))
