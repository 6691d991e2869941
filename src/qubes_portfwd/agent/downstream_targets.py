"""Where the kernel sends each DNAT target: a qube behind this one is reached out of a vif.

A network qube forwards only to its own downstream qubes. An entry that DNATs elsewhere (the
LAN router, the netvm, a qube behind another network qube) would open a path dom0 never
meant, so its target is checked against the kernel's routes before anything is compiled.
"""

import ipaddress
import json
import logging
import subprocess
from collections.abc import Iterable

from ..model.entries import IPAddress

ROUTE_TIMEOUT = 5.0
MAX_TARGETS = 4096  # more distinct targets than a network qube could have downstream qubes
DOWNSTREAM_PREFIX = "vif"  # Qubes names the backend of each downstream qube's link vifN.M

log = logging.getLogger("qubes_portfwd.agent")


def parse_route_devices(untrusted_output: str) -> dict[IPAddress, str]:
    """`dst` -> `dev` from `ip -force -j -batch -` of `route get`s: one JSON list per answer.

    A failed lookup prints nothing on stdout, so answers are paired by their `dst`; local,
    broadcast and other non-unicast answers and anything malformed are left out.
    """
    found: dict[IPAddress, str] = {}
    for untrusted_line in untrusted_output.splitlines()[:MAX_TARGETS]:
        try:
            untrusted_routes = json.loads(untrusted_line)
        except ValueError:
            continue
        if not isinstance(untrusted_routes, list) or len(untrusted_routes) != 1:
            continue
        untrusted_route = untrusted_routes[0]
        if not isinstance(untrusted_route, dict):
            continue
        if untrusted_route.get("type", "unicast") != "unicast":
            continue
        untrusted_device = untrusted_route.get("dev")
        if not isinstance(untrusted_device, str) or not 0 < len(untrusted_device) <= 15:
            continue
        try:
            destination = ipaddress.ip_address(str(untrusted_route.get("dst")))
        except ValueError:
            continue
        found[destination] = untrusted_device
    return found


def is_downstream_device(device: str | None) -> bool:
    return device is not None and device.startswith(DOWNSTREAM_PREFIX)


def route_devices(addresses: Iterable[IPAddress]) -> dict[IPAddress, str | None]:
    """The interface the kernel routes each address out of; None when unroutable or unreadable.

    One `ip` process for all of them (`route get` is the kernel's own answer, local and
    policy routes included); a network qube's targets are its few downstream qubes.
    """
    wanted = sorted(set(addresses), key=lambda a: (a.version, int(a)))[:MAX_TARGETS]
    if not wanted:
        return {}
    commands = "".join(f"route get {address}\n" for address in wanted)
    try:
        result = subprocess.run(
            ["ip", "-force", "-j", "-batch", "-"],
            input=commands,
            capture_output=True,
            text=True,
            timeout=ROUTE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("cannot look up the routes to the DNAT targets: %s", err)
        return dict.fromkeys(wanted)
    # A failed lookup makes `ip` exit 1 after answering the others.
    answers = parse_route_devices(result.stdout)
    return {address: answers.get(address) for address in wanted}
