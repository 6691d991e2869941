"""The qube's own addresses by interface, asked of the kernel over rtnetlink (for hairpin).

The edge's outside address can change under us (DHCP on a real uplink), so the agent reads
the addresses on every apply and compares them on every check.
"""

import logging
from collections.abc import Callable, Iterable, Mapping

from ..model.entries import IPAddress
from .rtnetlink import RT_SCOPE_UNIVERSE, Address, Rtnetlink, device_name

InterfaceAddresses = Mapping[str, tuple[IPAddress, ...]]
MAX_NAME = 15  # IFNAMSIZ less its NUL

log = logging.getLogger("qubes_portfwd.agent")


def global_addresses(
    addresses: Iterable[Address], name_of: Callable[[int], str | None]
) -> dict[str, tuple[IPAddress, ...]]:
    """Global addresses per interface name (`scope global`); link-local, host and nameless
    ones are left out."""
    found: dict[str, set[IPAddress]] = {}
    for address in addresses:
        if address.scope != RT_SCOPE_UNIVERSE:
            continue
        name = name_of(address.index)
        if name is None or not 0 < len(name) <= MAX_NAME:
            continue
        found.setdefault(name, set()).add(address.address)
    return {
        name: tuple(sorted(addresses, key=lambda a: (a.version, a)))
        for name, addresses in found.items()
    }


def read_interface_addresses() -> dict[str, tuple[IPAddress, ...]]:
    """This namespace's addresses; empty (no hairpin) when the kernel cannot be asked."""
    try:
        with Rtnetlink() as kernel:
            addresses = kernel.addresses()
    except OSError as err:
        log.warning("cannot read the interface addresses: %s", err)
        return {}
    return global_addresses(addresses, device_name)
