"""A qube's entries as the agent reads them: untrusted text in, checked values and errors out.

A broken forward entry is left out (so it opens nothing) and reported. A broken firewall
entry turns its source address into "drop everything" and is reported on each of its keys.
"""

import ipaddress
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..model.entries import (
    FIREWALL_PREFIX,
    FORWARD_PREFIX,
    FirewallEntry,
    Hop,
    IPAddress,
    parse_firewall,
    parse_hop,
)
from ..model.errors import ValidationError
from ..model.hosts import is_qube_name

PRIMARY_DNS_KEY = "/qubes-primary-dns"
SECONDARY_DNS_KEY = "/qubes-secondary-dns"
PRIMARY_DNS6_KEY = "/qubes-primary-dns6"
SECONDARY_DNS6_KEY = "/qubes-secondary-dns6"
FIREWALL_SERVICE_KEY = "/qubes-service/qubes-firewall"
OWN_ADDRESS_KEYS = ("/qubes-ip", "/qubes-ip6")
NAME_KEY = "/name"
# Set by dom0 when this qube's netvm runs natd: the gateway's SSDP replies may come in.
NATD_GATEWAY_SERVICE_KEY = "/qubes-service/portfwd-natd-gateway"
GATEWAY_KEY = "/qubes-gateway"  # natd serves IPv4 only, so `/qubes-gateway6` is not needed


@dataclass(frozen=True)
class ParsedEntries:
    """What one generation of entries asks for, after validation.

    `errors` maps each rejected key to its error text; `broken_sources` are downstream
    addresses whose firewall could not be read and must therefore drop everything.
    """

    hops: tuple[Hop, ...] = ()
    firewalls: tuple[FirewallEntry, ...] = ()
    broken_sources: tuple[IPAddress, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)
    firewall_keys: Mapping[IPAddress, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))
        object.__setattr__(self, "firewall_keys", MappingProxyType(dict(self.firewall_keys)))

    @property
    def dsthost_names(self) -> dict[str, set[int]]:
        """DNS names in the firewall rules, each with the families that need it resolved."""
        names: dict[str, set[int]] = defaultdict(set)
        for entry in self.firewalls:
            for rule in entry.rules:
                if rule.dsthost is not None and rule.dsthost.interface is None:
                    names[rule.dsthost.text].add(entry.address.version)
        return dict(names)

    @property
    def dsthosts_by_source(self) -> dict[IPAddress, set[str]]:
        """The DNS names each source's rules use."""
        return {
            entry.address: {
                rule.dsthost.text
                for rule in entry.rules
                if rule.dsthost is not None and rule.dsthost.interface is None
            }
            for entry in self.firewalls
        }

    def without_firewalls(self, reason: str) -> "ParsedEntries":
        """The same forwards with every firewall entry left out and marked with `reason`."""
        errors = dict(self.errors)
        for keys in self.firewall_keys.values():
            for key in keys:
                errors[key] = reason
        return ParsedEntries(hops=self.hops, errors=errors)

    def with_errors(self, errors: Mapping[str, str]) -> "ParsedEntries":
        """The same entries with more keys reported as not applied (first reason wins)."""
        return ParsedEntries(
            hops=self.hops,
            firewalls=self.firewalls,
            broken_sources=self.broken_sources,
            errors={**errors, **self.errors},
            firewall_keys=self.firewall_keys,
        )

    def with_broken_firewalls(self, reasons: Mapping[IPAddress, str]) -> "ParsedEntries":
        """The same entries with the firewalls of `reasons`' addresses turned into drops."""
        if not reasons:
            return self
        errors = dict(self.errors)
        for address, reason in reasons.items():
            for key in self.firewall_keys.get(address, ()):
                errors[key] = reason
        return ParsedEntries(
            hops=self.hops,
            firewalls=tuple(f for f in self.firewalls if f.address not in reasons),
            broken_sources=tuple(sorted({*self.broken_sources, *reasons}, key=_address_order)),
            errors=errors,
            firewall_keys=self.firewall_keys,
        )


def _address_order(address: IPAddress) -> tuple[int, int]:
    return (address.version, int(address))


def parse_entries(untrusted_entries: Mapping[str, str]) -> ParsedEntries:
    """Validate every `/qubes-portfwd/` and `/qubes-firewall/` entry; other keys are ignored."""
    hops: list[Hop] = []
    errors: dict[str, str] = {}
    untrusted_groups: dict[str, dict[str, str]] = defaultdict(dict)
    group_keys: dict[str, list[str]] = defaultdict(list)
    for untrusted_key, untrusted_value in sorted(untrusted_entries.items()):
        if untrusted_key.startswith(FORWARD_PREFIX):
            try:
                hops.append(parse_hop(untrusted_key, untrusted_value))
            except ValidationError as err:
                errors[untrusted_key] = str(err)
        elif untrusted_key.startswith(FIREWALL_PREFIX):
            untrusted_address, _, untrusted_name = untrusted_key[len(FIREWALL_PREFIX) :].partition(
                "/"
            )
            group_keys[untrusted_address].append(untrusted_key)
            if untrusted_name:
                untrusted_groups[untrusted_address][untrusted_name] = untrusted_value
            # Qubes also writes the bare `/qubes-firewall/<ip>` key as a change marker.
    firewalls: list[FirewallEntry] = []
    broken: set[IPAddress] = set()
    firewall_keys: dict[IPAddress, tuple[str, ...]] = {}
    for untrusted_address, keys in group_keys.items():
        try:
            entry = parse_firewall(untrusted_address, untrusted_groups.get(untrusted_address, {}))
            if getattr(entry.address, "scope_id", None):
                raise ValidationError("key", "expected an address without a %scope")
            if str(entry.address) != untrusted_address:
                # One address written two ways would make two chains for one source.
                raise ValidationError("key", f"write the address as {entry.address}")
        except ValidationError as err:
            for key in keys:
                errors[key] = str(err)
            address = _address_or_none(untrusted_address)
            if address is not None:
                broken.add(address)
                firewall_keys[address] = tuple(keys)
            continue
        firewalls.append(entry)
        firewall_keys[entry.address] = tuple(keys)
    return ParsedEntries(
        hops=tuple(hops),
        firewalls=tuple(sorted(firewalls, key=lambda f: _address_order(f.address))),
        broken_sources=tuple(sorted(broken, key=_address_order)),
        errors=errors,
        firewall_keys=firewall_keys,
    )


def _address_or_none(untrusted_address: str) -> IPAddress | None:
    # An unparsable address matches no packet; Qubes' default drop already covers it.
    try:
        address = ipaddress.ip_address(untrusted_address)
    except ValueError:
        return None
    # A scoped IPv6 address (`%eth0`) cannot go into nft; the unscoped one is what gets blocked.
    return ipaddress.ip_address(address.compressed.partition("%")[0])


@dataclass(frozen=True)
class QubeSettings:
    """The static keys the agent reads about its own qube."""

    name: str | None
    firewall_service: bool
    dns_servers: tuple[IPAddress, ...]
    problems: tuple[str, ...] = ()
    addresses: tuple[IPAddress, ...] = ()
    natd_gateway: ipaddress.IPv4Address | None = None


def parse_settings(untrusted_entries: Mapping[str, str]) -> QubeSettings:
    """The qube's name, whether it runs Qubes' firewall, its DNS servers (for dns rules), and
    its gateway when that one runs natd."""
    problems: list[str] = []
    servers = _addresses(
        untrusted_entries,
        (PRIMARY_DNS_KEY, SECONDARY_DNS_KEY, PRIMARY_DNS6_KEY, SECONDARY_DNS6_KEY),
        problems,
    )
    own = _addresses(untrusted_entries, OWN_ADDRESS_KEYS, problems)
    untrusted_name = untrusted_entries.get(NAME_KEY)
    name = untrusted_name if untrusted_name and is_qube_name(untrusted_name) else None
    natd_gateway = _natd_gateway(untrusted_entries, problems)
    return QubeSettings(
        name=name,
        firewall_service=untrusted_entries.get(FIREWALL_SERVICE_KEY) == "1",
        dns_servers=servers,
        problems=tuple(problems),
        addresses=own,
        natd_gateway=natd_gateway,
    )


def _natd_gateway(
    untrusted_entries: Mapping[str, str], problems: list[str]
) -> ipaddress.IPv4Address | None:
    if untrusted_entries.get(NATD_GATEWAY_SERVICE_KEY) != "1":
        return None
    untrusted_value = untrusted_entries.get(GATEWAY_KEY, "")
    try:
        return ipaddress.IPv4Address(untrusted_value)
    except ValueError:
        problems.append(
            f"{GATEWAY_KEY}: {untrusted_value[:64]!r} is not an IPv4 address; "
            "the gateway's SSDP replies stay blocked"
        )
        return None


def _addresses(
    untrusted_entries: Mapping[str, str], keys: tuple[str, ...], problems: list[str]
) -> tuple[IPAddress, ...]:
    found: list[IPAddress] = []
    for key in keys:
        untrusted_value = untrusted_entries.get(key)
        if not untrusted_value:
            continue
        try:
            address = ipaddress.ip_address(untrusted_value)
        except ValueError:
            problems.append(f"{key}: {untrusted_value[:64]!r} is not an IP address; ignored")
            continue
        if address not in found:
            found.append(address)
    return tuple(found)
