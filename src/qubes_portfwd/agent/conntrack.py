"""Ending removed forwards: conntrack keeps an open flow going after its rule is gone.

After an apply removed (or changed) a hop, the flows that hop let in are deleted from this
qube's connection tracking table, so a removed forward really closes. Only what the removed
hop alone carried goes: several forwards may share a target's port (and a network qube's
next hop and port, from both its sides), and a flow that a hop still in force lets in stays
if it came by that hop's side. The table is listed once per filter; flows are deleted per
port, or per port and source where a hop in force shares the port, so a range of any width
costs a few commands, not one per port.
"""

import asyncio
import bisect
import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..model.entries import DOWNSTREAM, AcceptHop, DnatHop, Hop, IPAddress
from ..model.ports import PortRange
from .downstream_targets import is_downstream_device, route_devices

CONNTRACK = "conntrack"
COMMAND_TIMEOUT = 5.0
_TUPLE_KEYS = ("src", "dst", "sport", "dport")

# Where each flow's original source lives: an interface, or DOWNSTREAM for any vif.
Sides = Mapping[IPAddress, str]

log = logging.getLogger("qubes_portfwd.agent")


@dataclass(frozen=True)
class Flow:
    """One tracked flow: its original direction and where the reply comes from."""

    orig_src: IPAddress
    orig_dst: IPAddress
    orig_dport: int
    reply_src: IPAddress
    reply_sport: int


@dataclass(frozen=True)
class Removal:
    """Hops no longer in force, and the hops that are (their flows must survive)."""

    hops: tuple[Hop, ...]
    kept: tuple[Hop, ...] = ()


class InForce:
    """The hops in force, found by port: which of them would let a removed hop's flow in."""

    def __init__(self, kept: Iterable[Hop]) -> None:
        self._kept = tuple(kept)
        self._groups: dict[tuple[object, ...], _Spans] = {}  # built on first use

    def at(self, hop: Hop, proto: str, port: int) -> list[Hop]:
        """Hops in force of `hop`'s kind, family and protocol (DNAT: and target) on `port`."""
        key = _group(hop, proto)
        spans = self._groups.get(key)
        if spans is None:
            spans = self._groups[key] = _Spans(
                k for k in self._kept if proto in k.protos and _group(k, proto) == key
            )
        return spans.covering(port)


def _group(hop: Hop, proto: str) -> tuple[object, ...]:
    if isinstance(hop, DnatHop):
        return ("dnat", hop.family, proto, hop.to)
    return ("accept", hop.family, proto)


class _Spans:
    """Hops by port range, for "which of them cover port P" in a bisection plus the overlap."""

    def __init__(self, hops: Iterable[Hop]) -> None:
        self._spans = sorted(
            ((h.ports.first, h.ports.last, n, h) for n, h in enumerate(hops)),
            key=lambda span: span[:3],
        )
        self._firsts = [span[0] for span in self._spans]
        self._reach: list[int] = []  # the highest `last` up to each span: where a walk stops
        for span in self._spans:
            self._reach.append(max(span[1], self._reach[-1] if self._reach else -1))

    def covering(self, port: int) -> list[Hop]:
        found = []
        index = bisect.bisect_right(self._firsts, port) - 1
        while index >= 0 and self._reach[index] >= port:
            first, last, _, hop = self._spans[index]
            if first <= port <= last:
                found.append(hop)
            index -= 1
        return found


def removed_hops(before: Iterable[Hop], after: Iterable[Hop]) -> Removal:
    """Hops in force before and not after (a changed hop counts as removed), and those after."""
    kept = tuple(after)
    # Hashing a hop runs Python code for each of its addresses (~25 ms for 8,334 hops, twice
    # per apply): equal hops share their forward id and family, so that finds the candidates,
    # and most are the very objects of the last apply (`parse_entries` reuses them).
    by_key: dict[tuple[str, int], list[Hop]] = {}
    for hop in kept:
        by_key.setdefault((hop.forward_id, hop.family), []).append(hop)
    gone = [
        h
        for h in before
        if not any(k is h or k == h for k in by_key.get((h.forward_id, h.family), ()))
    ]
    return Removal(tuple(sorted(set(gone), key=lambda h: (h.forward_id, h.family))), kept)


class FlowTable:
    """One listing's flows by original destination port: a hop looks at its ports only."""

    def __init__(self, flows: Iterable[Flow]) -> None:
        self._flows = sorted(flows, key=lambda f: f.orig_dport)
        self._ports = [f.orig_dport for f in self._flows]

    def on(self, ports: PortRange) -> list[Flow]:
        start = bisect.bisect_left(self._ports, ports.first)
        return self._flows[start : bisect.bisect_right(self._ports, ports.last, lo=start)]


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
                    orig_src=ipaddress.ip_address(values["src"][0]),
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


def _reply_port(hop: DnatHop, port: int) -> int:
    return port + hop.ports.offset_to(hop.toports)


def _lets_in(hop: Hop, flow: Flow, own: IPAddress | None) -> bool:
    """Whether the flow has the tuples `hop` gives its flows (the side it came by aside)."""
    if flow.orig_dport not in hop.ports:
        return False
    if isinstance(hop, DnatHop):
        # A DNATed flow answers from `to`, on the mapped port.
        shaped = flow.reply_src == hop.to and flow.reply_sport == _reply_port(hop, flow.orig_dport)
    else:
        shaped = own is not None and flow.orig_dst == own
    return shaped and any(flow.orig_src in network for network in hop.sources)


def _same_port(hop: Hop, other: Hop, port: int) -> bool:
    """Whether `other` forwards `port` as `hop` does (DNAT: onto the same target port)."""
    if isinstance(hop, DnatHop):
        return isinstance(other, DnatHop) and _reply_port(other, port) == _reply_port(hop, port)
    return True


def _others(in_force: InForce, hop: Hop, proto: str, port: int) -> list[Hop]:
    return [k for k in in_force.at(hop, proto, port) if _same_port(hop, k, port)]


def sources_to_place(
    hop: Hop, proto: str, flows: Iterable[Flow], in_force: InForce, own: IPAddress | None
) -> set[IPAddress]:
    """Sources of the hop's flows that a DNAT in force on another side would also let in.

    conntrack does not record the interface a flow came by; where the source lives does
    (Qubes drops spoofed sources on vifs), so only these need a route lookup.
    """
    if not isinstance(hop, DnatHop):
        return set()
    return {
        f.orig_src
        for f in flows
        if _lets_in(hop, f, own)
        for k in _others(in_force, hop, proto, f.orig_dport)
        if isinstance(k, DnatHop) and k.inbound != hop.inbound and _lets_in(k, f, own)
    }


def _still_carried(
    hop: Hop, proto: str, flow: Flow, in_force: InForce, own: IPAddress | None, sides: Sides
) -> bool:
    for kept in _others(in_force, hop, proto, flow.orig_dport):
        if not _lets_in(kept, flow, own):
            continue
        if not isinstance(kept, DnatHop) or not isinstance(hop, DnatHop):
            return True  # a target has one side: its accepts are a union
        if kept.inbound == hop.inbound or sides.get(flow.orig_src) == kept.inbound:
            return True
    return False


def delete_commands(
    hop: Hop,
    proto: str,
    flows: Iterable[Flow],
    own_addresses: Sequence[IPAddress],
    in_force: InForce | None = None,
    sides: Sides | None = None,
) -> list[list[str]]:
    """`conntrack -D` arguments for the flows only `hop` carried: one per port, or per port
    and source where a hop in force shares that port."""
    in_force = in_force or InForce(())
    own = _own_address(hop, own_addresses)
    if isinstance(hop, AcceptHop) and own is None:
        return []
    cut: dict[int, set[IPAddress]] = {}
    for flow in flows:
        if _lets_in(hop, flow, own) and not _still_carried(
            hop, proto, flow, in_force, own, sides or {}
        ):
            cut.setdefault(flow.orig_dport, set()).add(flow.orig_src)
    commands = []
    for port in sorted(cut):
        if isinstance(hop, DnatHop):
            match = ["--orig-port-dst", str(port), "--reply-src", str(hop.to)]
            match += ["--reply-port-src", str(_reply_port(hop, port))]
        else:
            match = ["--orig-dst", str(own), "--orig-port-dst", str(port)]
        if not _others(in_force, hop, proto, port):
            commands.append([*_family_args(hop, proto), *match])
            continue
        # A hop in force may open a flow on this port at any time: name each source.
        for source in sorted(cut[port], key=int):
            commands.append([*_family_args(hop, proto), "--orig-src", str(source), *match])
    return commands


async def place_sources(sources: set[IPAddress]) -> dict[IPAddress, str]:
    """The side each source lives on, by the kernel's route to it (unknown ones left out)."""
    devices = await asyncio.to_thread(route_devices, sources)
    return {
        address: DOWNSTREAM if is_downstream_device(device) else device
        for address, device in devices.items()
        if device is not None
    }


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


async def forget_flows(removal: Removal, own_addresses: Sequence[IPAddress]) -> None:
    """Delete the tracked flows only the removed hops carried; failures are logged, never raised."""
    # Hops share filters (every forward of an edge answers from the same next hop): one
    # listing per filter, not one per hop, keeps removing 10,000 forwards to a few commands.
    listings: dict[tuple[str, ...], FlowTable | None] = {}
    in_force = InForce(removal.kept)
    for hop in removal.hops:
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
                listings[key] = None if listing is None else FlowTable(parse_flows(listing))
            table = listings[key]
            if table is None:
                continue
            flows = table.on(hop.ports)
            own = _own_address(hop, own_addresses)
            unplaced = sources_to_place(hop, proto, flows, in_force, own)
            sides = await place_sources(unplaced) if unplaced else {}
            for argv in delete_commands(hop, proto, flows, own_addresses, in_force, sides):
                await _conntrack("-D", argv)
