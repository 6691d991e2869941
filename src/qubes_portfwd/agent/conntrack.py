"""Ending removed forwards: conntrack keeps an open flow going after its rule is gone.

After an apply removed (or changed) a hop, the flows that hop let in are deleted from this
qube's connection tracking table, so a removed forward really closes.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from ..model.entries import AcceptHop, DnatHop, Hop, IPAddress

CONNTRACK = "conntrack"
MAX_PORTS_PER_HOP = 256  # one command per port; wider ranges are left to time out by themselves
COMMAND_TIMEOUT = 5.0

log = logging.getLogger("qubes_portfwd.agent")


def removed_hops(before: Iterable[Hop], after: Iterable[Hop]) -> list[Hop]:
    """Hops in force before and not after (a changed hop counts as removed)."""
    kept = set(after)
    return sorted((h for h in set(before) if h not in kept), key=lambda h: (h.forward_id, h.family))


def forget_commands(
    hops: Iterable[Hop], own_addresses: Sequence[IPAddress]
) -> tuple[list[list[str]], list[str]]:
    """`conntrack -D` argv lists for the flows of `hops`, and what had to be left alone."""
    commands: list[list[str]] = []
    left: list[str] = []
    for hop in hops:
        if len(hop.ports) > MAX_PORTS_PER_HOP:
            left.append(f"{hop.forward_id}: {len(hop.ports)} ports, over {MAX_PORTS_PER_HOP}")
            continue
        family = ["-f", "ipv4" if hop.family == 4 else "ipv6"]
        for proto in hop.protos:
            if isinstance(hop, DnatHop):
                # Only flows this hop rewrote: they answer from `to`, on the mapped port.
                shift = hop.ports.offset_to(hop.toports)
                for port in range(hop.ports.first, hop.ports.last + 1):
                    match = ["--orig-port-dst", str(port), "--reply-src", str(hop.to)]
                    commands.append(
                        [*family, "-p", proto, *match, "--reply-port-src", str(port + shift)]
                    )
                continue
            assert isinstance(hop, AcceptHop)
            own = [a for a in own_addresses if a.version == hop.family]
            if not own:
                left.append(f"{hop.forward_id}: this qube's IPv{hop.family} address is unknown")
                continue
            for port in range(hop.ports.first, hop.ports.last + 1):
                commands.append(
                    [*family, "-p", proto, "--orig-port-dst", str(port), "--orig-dst", str(own[0])]
                )
    return commands, left


async def forget_flows(hops: Sequence[Hop], own_addresses: Sequence[IPAddress]) -> None:
    """Delete the tracked flows of removed hops; failures are logged, never raised."""
    commands, left = forget_commands(hops, own_addresses)
    for reason in left:
        log.info("open flows kept (they end by timeout): %s", reason)
    for argv in commands:
        try:
            process = await asyncio.create_subprocess_exec(
                CONNTRACK,
                "-D",
                *argv,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as err:
            log.warning("cannot run conntrack: %s", err)
            return
        try:
            # Exit status 1 only means "no such flow".
            await asyncio.wait_for(process.wait(), COMMAND_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            log.warning("conntrack %s took over %s s", " ".join(argv), COMMAND_TIMEOUT)
