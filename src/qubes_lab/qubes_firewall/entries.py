"""`/qubes-firewall/<ip>/…`: a qube's accept/drop rules as core-admin writes them into its
netvm's QubesDB (`Firewall.qdb_entries`), and as the qubes-firewall worker reads them back.

Core-admin numbers the rules by their place in the whole list, so a rule left out (expired,
or a `dst4` rule under the IPv6 address) leaves a gap; the worker only sorts the numbers.
"""

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.hosts import parse_ip
from qubes_portfwd.model.rule import FilterRule, Rule
from qubes_portfwd.model.rule_text import format_qdb_rule, parse_rule
from qubes_portfwd.planner.expiry import is_expired

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FIREWALL_PREFIX = "/qubes-firewall/"
HANDLED_PREFIX = "/qubes-firewall-handled/"
POLICY = "drop"  # what core-admin writes: the rule list ends in drop unless a rule accepts
# Qubes numbers a qube's rules with four digits (0000-9999): qubesd refuses longer lists.
MAX_FIREWALL_RULES = 10_000


@dataclass(frozen=True)
class FirewallEntry:
    """Outbound firewall of one downstream address (Qubes' `/qubes-firewall/<ip>/`)."""

    address: IPAddress
    policy: str
    rules: tuple[FilterRule, ...]


def base_path(address: IPAddress) -> str:
    return f"{FIREWALL_PREFIX}{address}/"


def marker_path(address: IPAddress) -> str:
    """The empty key core-admin writes last: the worker acts on it."""
    return f"{FIREWALL_PREFIX}{address}"


def qdb_entries(rules: Iterable[Rule], family: int, now: float, boot_id: str) -> dict[str, str]:
    """One qube's entries for one address family, names relative (`policy`, `0000`, …)."""
    other_type = "dst6" if family == 4 else "dst4"
    entries = {"policy": POLICY}
    filters = [r for r in rules if isinstance(r, FilterRule)]
    for number, rule in enumerate(filters):
        if is_expired(rule, now, boot_id):
            continue
        if rule.dsthost is not None and rule.dsthost.type == other_type:
            continue
        entries[f"{number:04}"] = format_qdb_rule(rule)
    return entries


def parse_firewall(untrusted_address: str, untrusted_values: Mapping[str, str]) -> FirewallEntry:
    """The entries under `/qubes-firewall/<ip>/` (relative names), checked as the worker does:
    a policy, four-digit rule numbers only, every rule an accept/drop rule without expire or
    comment. Any fault fails the whole address (the worker then drops its traffic)."""
    address = parse_ip(untrusted_address)
    if address is None:
        raise ValidationError("key", f"{untrusted_address!r} is not an address")
    if getattr(address, "scope_id", None):
        raise ValidationError("key", "expected an address without a %scope")
    if str(address) != untrusted_address:
        # One address written two ways would make two chains for one source.
        raise ValidationError("key", f"write the address as {address}")
    policy = untrusted_values.get("policy")
    if policy not in ("accept", "drop"):
        raise ValidationError("policy", "expected accept or drop")
    numbers = sorted(k for k in untrusted_values if k != "policy")
    if len(numbers) > MAX_FIREWALL_RULES:
        raise ValidationError(
            "key", f"{len(numbers)} rules; at most {MAX_FIREWALL_RULES} (0000-9999)"
        )
    rules = []
    for name in numbers:
        if len(name) != 4 or not name.isdigit() or not name.isascii():
            raise ValidationError("key", f"{name[:16]!r} is not a four-digit rule number")
        rule = parse_rule(untrusted_values[name])
        if not isinstance(rule, FilterRule) or rule.expire is not None or rule.comment:
            raise ValidationError(name, "expected an accept/drop rule in QubesDB form")
        rules.append(rule)
    return FirewallEntry(address, policy, tuple(rules))


def format_firewall(entry: FirewallEntry) -> dict[str, str]:
    """An entry as full paths, rules numbered without gaps (tests build entries with it)."""
    base = base_path(entry.address)
    values = {f"{base}policy": entry.policy}
    for number, rule in enumerate(entry.rules):
        values[f"{base}{number:04}"] = format_qdb_rule(rule)
    return values
