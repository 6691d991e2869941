"""Addresses in rules: Qubes' dsthost (dst4/dst6/dsthost) and forward sources."""

import functools
import ipaddress
import string
from dataclasses import dataclass, field
from typing import Literal

from .errors import ValidationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
DstType = Literal["dst4", "dst6", "dsthost"]

_HOSTNAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "-._")
QUBE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")


@dataclass(frozen=True)
class DstHost:
    """An outbound rule's destination, kept as written (Qubes sends it back unchanged).

    `interface` is the parsed address/prefix (host bits kept, as Qubes keeps them);
    None for a DNS name, which the qube resolves itself.
    """

    text: str
    interface: Interface | None = field(default=None, compare=False)

    @property
    def type(self) -> DstType:
        if self.interface is None:
            return "dsthost"
        return "dst4" if self.interface.version == 4 else "dst6"

    @property
    def network(self) -> Network | None:
        return None if self.interface is None else self.interface.network


def parse_ip(untrusted_host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address with no scope id (`fe80::1%eth0` names a link, not a host), or None."""
    if "%" in untrusted_host:
        return None
    try:
        return ipaddress.ip_address(untrusted_host)
    except ValueError:
        return None


def _parse_prefix(
    field_name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, untrusted: str
) -> int:
    if not (untrusted.isdigit() and untrusted.isascii() and len(untrusted) <= 3):
        raise ValidationError(field_name, f"prefix length {untrusted!r} is not a number")
    prefix = int(untrusted)
    if prefix > address.max_prefixlen:
        raise ValidationError(
            field_name,
            f"prefix length {prefix} is over {address.max_prefixlen} for IPv{address.version}",
        )
    return prefix


def parse_dsthost(field_name: str, untrusted_value: str) -> DstHost:
    """Qubes' DstHost rules: bare IPs get a full prefix; names are lowercase DNS names."""
    if untrusted_value.count("/") > 1:
        raise ValidationError(field_name, f"{untrusted_value!r} has more than one '/'")
    host, slash, untrusted_prefix = untrusted_value.partition("/")
    address = parse_ip(host)
    if address is None:
        if slash:
            raise ValidationError(field_name, f"{host!r} is not an IPv4 or IPv6 address")
        if not host or not set(host) <= _HOSTNAME_CHARS or len(host) > 253:
            raise ValidationError(
                field_name,
                f"{host!r} is not an address, a network A/N or a lowercase DNS name",
            )
        return DstHost(text=host)
    if slash:
        prefix = _parse_prefix(field_name, address, untrusted_prefix)
        text = untrusted_value
    else:
        prefix = address.max_prefixlen
        text = f"{host}/{prefix}"
    return DstHost(text=text, interface=ipaddress.ip_interface(f"{address}/{prefix}"))


@functools.lru_cache(maxsize=1024)
def address_text(value: ipaddress.IPv4Address | ipaddress.IPv6Address | Network) -> str:
    """`str` of an address or network, from a bounded cache: a qube's forwards repeat a few
    sources and next hops thousands of times (entries written, compared, compiled), and
    ipaddress writes each one anew."""
    return str(value)


def parse_cidr(field_name: str, untrusted_value: str) -> Network:
    """A strict network for forward sources: host bits must be zero; a bare IP is /32 or /128."""
    host, slash, untrusted_prefix = untrusted_value.partition("/")
    address = parse_ip(host)
    if address is None:
        raise ValidationError(field_name, f"{untrusted_value!r} is not an address or network A/N")
    prefix = (
        _parse_prefix(field_name, address, untrusted_prefix) if slash else address.max_prefixlen
    )
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    if network.network_address != address:
        raise ValidationError(
            field_name, f"{untrusted_value} has host bits set; write {network} for that network"
        )
    return network


def is_qube_name(value: str) -> bool:
    """Qubes' rule for VM names: a letter first, then letters, digits, '-', '_', '.'."""
    return (
        0 < len(value) <= 31
        and value[0].isascii()
        and value[0].isalpha()
        and set(value) <= QUBE_NAME_CHARS
    )
