"""The one place the agent meets the nft compiler: checked entries in, one nft script out."""

from ..model.entries import FORWARD_PREFIX
from ..nft.compiler import CompiledRules, QubeRules, compile_qube
from ..nft.owned import parse_owned_jumps
from .entries import ParsedEntries, QubeSettings
from .local_addresses import InterfaceAddresses, read_interface_addresses
from .resolve import Resolved


def build_script(
    parsed: ParsedEntries,
    resolved: Resolved,
    settings: QubeSettings,
    untrusted_ruleset_json: str,
    interface_addresses: InterfaceAddresses | None = None,
) -> CompiledRules:
    """The transaction that replaces everything this project owns in the qube.

    `interface_addresses` default to the ones the qube has now (read with `ip`).
    """
    if interface_addresses is None:
        interface_addresses = read_interface_addresses()
    rules = QubeRules(
        hops=parsed.hops,
        network_qube=settings.firewall_service,
        firewall=parsed.firewalls,
        broken_sources=parsed.broken_sources,
        resolved=resolved.addresses,
        dns_servers=settings.dns_servers,
        interface_addresses=interface_addresses,
    )
    return compile_qube(rules, parse_owned_jumps(untrusted_ruleset_json))


def left_out(compiled: CompiledRules, parsed: ParsedEntries) -> dict[str, str]:
    """Entries the compiler could not use, by key, with its reason (they open nothing)."""
    errors = {
        f"{FORWARD_PREFIX}{hop.forward_id}/{hop.family}": f"not applied: {hop.reason}"
        for hop in compiled.skipped
    }
    for source in compiled.blocked:
        for key in parsed.firewall_keys.get(source.address, ()):
            errors.setdefault(key, f"traffic from {source.address} blocked: {source.reason}")
    return errors
