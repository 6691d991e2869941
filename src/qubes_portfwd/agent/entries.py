"""A qube's entries as the agent reads them: untrusted text in, checked values and errors out.

A broken forward entry is left out (so it opens nothing) and reported. `/qubes-firewall/`
is not read: Qubes' own qubes-firewall worker owns it and its table.
"""

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..model.entries import FORWARD_PREFIX, Hop, IPAddress, format_hop, hop_key, parse_hop
from ..model.errors import ValidationError
from ..model.hosts import is_qube_name

OWN_ADDRESS_KEYS = ("/qubes-ip", "/qubes-ip6")
NAME_KEY = "/name"
# Set by dom0 when this qube's netvm runs natd: the gateway's SSDP replies may come in.
NATD_GATEWAY_SERVICE_KEY = "/qubes-service/portfwd-natd-gateway"
GATEWAY_KEY = "/qubes-gateway"  # natd serves IPv4 only, so `/qubes-gateway6` is not needed


@dataclass(frozen=True)
class ParsedEntries:
    """What one generation of entries asks for, after validation; `errors` maps each
    rejected key to its error text."""

    hops: tuple[Hop, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))

    def with_errors(self, errors: Mapping[str, str]) -> "ParsedEntries":
        """The same entries with more keys reported as not applied (first reason wins)."""
        return ParsedEntries(hops=self.hops, errors={**errors, **self.errors})


def parse_entries(
    untrusted_entries: Mapping[str, str], previous: Iterable[Hop] = ()
) -> ParsedEntries:
    """Validate every `/qubes-portfwd/` entry; other keys are ignored.

    `previous`: hops of an earlier parse; an entry still written exactly as one of them is
    that hop again, without parsing it (the same text parses to an equal hop).
    """
    # Writing a hop's text costs a quarter of parsing it, and an apply mostly re-reads
    # entries that did not change. Nothing is kept: the agent holds its last hops anyway.
    known = {hop_key(hop): hop for hop in previous}
    hops: list[Hop] = []
    errors: dict[str, str] = {}
    for untrusted_key, untrusted_value in sorted(untrusted_entries.items()):
        if untrusted_key.startswith(FORWARD_PREFIX):
            earlier = known.get(untrusted_key)
            if earlier is not None and format_hop(earlier) == untrusted_value:
                hops.append(earlier)
                continue
            try:
                hops.append(parse_hop(untrusted_key, untrusted_value))
            except ValidationError as err:
                errors[untrusted_key] = str(err)
    return ParsedEntries(hops=tuple(hops), errors=errors)


@dataclass(frozen=True)
class QubeSettings:
    """The static keys the agent reads about its own qube."""

    name: str | None
    problems: tuple[str, ...] = ()
    addresses: tuple[IPAddress, ...] = ()
    natd_gateway: ipaddress.IPv4Address | None = None


def parse_settings(untrusted_entries: Mapping[str, str]) -> QubeSettings:
    """The qube's name, its own addresses, and its gateway when that one runs natd."""
    problems: list[str] = []
    own = _addresses(untrusted_entries, OWN_ADDRESS_KEYS, problems)
    untrusted_name = untrusted_entries.get(NAME_KEY)
    name = untrusted_name if untrusted_name and is_qube_name(untrusted_name) else None
    natd_gateway = _natd_gateway(untrusted_entries, problems)
    return QubeSettings(
        name=name,
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
