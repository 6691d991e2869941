"""The one place the agent meets the nft compiler: checked entries in, one nft script out."""

import dataclasses
from collections.abc import Mapping, Sequence

from ..model.entries import FORWARD_PREFIX, DnatHop, Hop, IPAddress
from ..nft.compiler import CompiledRules, QubeRules, compile_qube
from ..nft.forwards import SkippedHop
from ..nft.owned import parse_owned_jumps
from ..nft.ssdp_reply import SsdpReply
from .downstream_targets import is_downstream_device, route_devices
from .entries import ParsedEntries, QubeSettings
from .local_addresses import InterfaceAddresses, read_interface_addresses

TargetDevices = Mapping[IPAddress, str | None]


def build_script(
    parsed: ParsedEntries,
    settings: QubeSettings,
    untrusted_ruleset_json: str,
    interface_addresses: InterfaceAddresses | None = None,
    target_devices: TargetDevices | None = None,
) -> CompiledRules:
    """The transaction that replaces everything this project owns in the qube.

    `interface_addresses` default to the ones the qube has now (asked of the kernel over
    rtnetlink), and `target_devices` (where the kernel routes each DNAT target) to the routes
    it has now.
    """
    if interface_addresses is None:
        interface_addresses = read_interface_addresses()
    if target_devices is None:
        target_devices = route_devices(dnat_targets(parsed))
    hops, refused = refuse_foreign_targets(parsed.hops, target_devices)
    rules = QubeRules(
        hops=hops,
        interface_addresses=interface_addresses,
        ssdp_replies=ssdp_replies(settings),
    )
    compiled = compile_qube(rules, parse_owned_jumps(untrusted_ruleset_json))
    return dataclasses.replace(compiled, skipped=(*refused, *compiled.skipped))


def dnat_targets(parsed: ParsedEntries) -> frozenset[IPAddress]:
    """The addresses this qube's DNATs send to (each must be a downstream qube)."""
    return frozenset(h.to for h in parsed.hops if isinstance(h, DnatHop))


def refuse_foreign_targets(
    hops: Sequence[Hop], target_devices: TargetDevices
) -> tuple[tuple[Hop, ...], tuple[SkippedHop, ...]]:
    """Hops minus DNATs to anything but a downstream qube (routed out of a vif), and why."""
    kept: list[Hop] = []
    refused: list[SkippedHop] = []
    for hop in hops:
        if not isinstance(hop, DnatHop):
            kept.append(hop)
            continue
        device = target_devices.get(hop.to)
        if is_downstream_device(device):
            kept.append(hop)
            continue
        where = f"the kernel routes it out of {device}" if device else "no route leads to it"
        reason = f"to={hop.to} is not a qube behind this one ({where})"
        refused.append(SkippedHop(hop.forward_id, hop.family, reason))
    return tuple(kept), tuple(refused)


def ssdp_replies(settings: QubeSettings) -> tuple[SsdpReply, ...]:
    """The gateway's SSDP answers to let in, when the netvm runs natd (IPv4 only, like natd)."""
    if settings.natd_gateway is None:
        return ()
    return tuple(
        SsdpReply(settings.natd_gateway, address)
        for address in settings.addresses
        if address.version == 4
    )


def left_out(compiled: CompiledRules) -> dict[str, str]:
    """Entries the compiler could not use, by key, with its reason (they open nothing)."""
    return {
        f"{FORWARD_PREFIX}{hop.forward_id}/{hop.family}": f"not applied: {hop.reason}"
        for hop in compiled.skipped
    }
