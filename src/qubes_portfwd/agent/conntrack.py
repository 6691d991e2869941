"""Ending removed forwards: conntrack keeps an open flow going after its rule is gone.

After an apply removed (or changed) a hop, the flows that hop let in are deleted from this
qube's connection tracking table, so a removed forward really closes. The table is listed
once per hop and protocol and only the ports that have live flows are deleted, so a range
of any width costs a few commands, not one per port.
"""

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..model.entries import AcceptHop, DnatHop, Hop, IPAddress

CONNTRACK = "conntrack"
COMMAND_TIMEOUT = 5.0
_TUPLE_KEYS = ("src", "dst", "sport", "dport")

log = logging.getLogger("qubes_portfwd.agent")


@dataclass(frozen=True)
class Flow:
    """One tracked flow: its original direction and where the reply comes from."""

    orig_dst: IPAddress
    orig_dport: int
    reply_src: IPAddress
    reply_sport: int


def removed_hops(before: Iterable[Hop], after: Iterable[Hop]) -> list[Hop]:
    """Hops in force before and not after (a changed hop counts as removed)."""
    kept = set(after)
    return sorted((h for h in set(before) if h not in kept), key=lambda h: (h.forward_id, h.family))


def parse_flows(untrusted_listing: str) -> list[Flow]:
    """Flows in `conntrack -L` text (one per line: the original tuple, then the reply's)."""
    flows = []
    for untrusted_line in untrusted_listing.splitlines():
        values: dict[str, list[str]] = {key: [] for key in _TUPLE_KEYS}
        for untrusted_word in untrusted_line.split():
            key, sep, value = untrusted_word.partition("=")
            if sep and key in values:
                values[key].append(value)
        try:
            flows.append(
                Flow(
                    orig_dst=ipaddress.ip_address(values["dst"][0]),
                    orig_dport=int(values["dport"][0]),
                    reply_src=ipaddress.ip_address(values["src"][1]),
                    reply_sport=int(values["sport"][1]),
                )
            )
        except (IndexError, ValueError):
            continue  # a line without both tuples (e.g. icmp, a summary) is no flow of ours
    return flows


def _family_args(hop: Hop, proto: str) -> list[str]:
    return ["-f", "ipv4" if hop.family == 4 else "ipv6", "-p", proto]


def _own_address(hop: Hop, own_addresses: Sequence[IPAddress]) -> IPAddress | None:
    return next((a for a in own_addresses if a.version == hop.family), None)


def list_filter(hop: Hop, proto: str, own_addresses: Sequence[IPAddress]) -> list[str] | None:
    """`conntrack -L` arguments narrowing the listing to flows this hop may have let in."""
    if isinstance(hop, DnatHop):
        return [*_family_args(hop, proto), "--reply-src", str(hop.to)]
    own = _own_address(hop, own_addresses)
    if own is None:
        return None
    return [*_family_args(hop, proto), "--orig-dst", str(own)]


def delete_commands(
    hop: Hop, proto: str, flows: Iterable[Flow], own_addresses: Sequence[IPAddress]
) -> list[list[str]]:
    """`conntrack -D` arguments, one per port that has a live flow of this hop."""
    commands = []
    if isinstance(hop, DnatHop):
        shift = hop.ports.offset_to(hop.toports)
        # Only flows this hop rewrote: they answer from `to`, on the mapped port.
        ports = sorted(
            {
                f.orig_dport
                for f in flows
                if f.orig_dport in hop.ports
                and f.reply_src == hop.to
                and f.reply_sport == f.orig_dport + shift
            }
        )
        for port in ports:
            match = ["--orig-port-dst", str(port), "--reply-src", str(hop.to)]
            commands.append(
                [*_family_args(hop, proto), *match, "--reply-port-src", str(port + shift)]
            )
        return commands
    assert isinstance(hop, AcceptHop)
    own = _own_address(hop, own_addresses)
    if own is None:
        return []
    ports = sorted({f.orig_dport for f in flows if f.orig_dst == own and f.orig_dport in hop.ports})
    for port in ports:
        match = ["--orig-dst", str(own), "--orig-port-dst", str(port)]
        commands.append([*_family_args(hop, proto), *match])
    return commands


async def _conntrack(mode: str, argv: Sequence[str]) -> str | None:
    """Run `conntrack MODE argv`; its stdout, or None when it could not run to the end."""
    try:
        process = await asyncio.create_subprocess_exec(
            CONNTRACK,
            mode,
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as err:
        log.warning("cannot run conntrack: %s", err)
        return None
    try:
        # Exit status 1 only means "no such flow": not an error here.
        out, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        log.warning("conntrack %s %s took over %s s", mode, " ".join(argv), COMMAND_TIMEOUT)
        return None
    return out.decode(errors="replace")


async def forget_flows(hops: Sequence[Hop], own_addresses: Sequence[IPAddress]) -> None:
    """Delete the tracked flows of removed hops; failures are logged, never raised."""
    # Hops share filters (every forward of an edge answers from the same next hop): one
    # listing per filter, not one per hop, keeps removing 10,000 forwards to a few commands.
    listings: dict[tuple[str, ...], list[Flow] | None] = {}
    for hop in hops:
        for proto in hop.protos:
            narrowed = list_filter(hop, proto, own_addresses)
            if narrowed is None:
                log.info(
                    "open flows of %s kept (they end by timeout): this qube's IPv%d address "
                    "is unknown",
                    hop.forward_id,
                    hop.family,
                )
                continue
            key = tuple(narrowed)
            if key not in listings:
                listing = await _conntrack("-L", narrowed)
                listings[key] = None if listing is None else parse_flows(listing)
            flows = listings[key]
            if flows is None:
                continue
            for argv in delete_commands(hop, proto, flows, own_addresses):
                await _conntrack("-D", argv)
