"""Where the kernel sends each DNAT target: a qube behind this one is reached out of a vif.

A network qube forwards only to its own downstream qubes. An entry that DNATs elsewhere (the
LAN router, the netvm, a qube behind another network qube) would open a path dom0 never
meant, so its target is checked against the kernel's routes before anything is compiled.
"""

import logging
from collections.abc import Callable, Iterable

from ..model.entries import IPAddress
from .rtnetlink import RTN_UNICAST, Route, Rtnetlink, device_name

MAX_TARGETS = 4096  # more distinct targets than a network qube could have downstream qubes
DOWNSTREAM_PREFIX = "vif"  # Qubes names the backend of each downstream qube's link vifN.M
MAX_NAME = 15  # IFNAMSIZ less its NUL

log = logging.getLogger("qubes_portfwd.agent")


def is_downstream_device(device: str | None) -> bool:
    return device is not None and device.startswith(DOWNSTREAM_PREFIX)


def route_devices(addresses: Iterable[IPAddress]) -> dict[IPAddress, str | None]:
    """The interface the kernel routes each address out of; None when unroutable or unreadable.

    The kernel's own lookup (`ip route get`: local and policy routes included), asked over
    one rtnetlink socket; a network qube's targets are its few downstream qubes.
    """
    wanted = sorted(set(addresses), key=lambda a: (a.version, int(a)))[:MAX_TARGETS]
    if not wanted:
        return {}
    try:
        with Rtnetlink() as kernel:
            routes = {address: kernel.route_to(address) for address in wanted}
    except OSError as err:
        log.warning("cannot look up the routes to the DNAT targets: %s", err)
        return dict.fromkeys(wanted)
    return {address: unicast_device(route) for address, route in routes.items()}


def unicast_device(
    route: Route | None, name_of: Callable[[int], str | None] = device_name
) -> str | None:
    """The output interface of a unicast route; None for local, broadcast and other types."""
    if route is None or route.kind != RTN_UNICAST or route.device_index is None:
        return None
    name = name_of(route.device_index)
    return name if name is not None and 0 < len(name) <= MAX_NAME else None
