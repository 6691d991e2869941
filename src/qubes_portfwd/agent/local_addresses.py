"""The qube's own addresses by interface, read from `ip -j addr show` (for hairpin).

The edge's outside address can change under us (DHCP on a real uplink), so the agent reads
the addresses on every apply and compares them on every check.
"""

import ipaddress
import json
import logging
import subprocess
from collections.abc import Mapping
from typing import Any

from ..model.entries import IPAddress

IP_COMMAND = ("ip", "-j", "addr", "show")
READ_TIMEOUT = 5.0

InterfaceAddresses = Mapping[str, tuple[IPAddress, ...]]

log = logging.getLogger("qubes_portfwd.agent")


def parse_interface_addresses(untrusted_json: str) -> dict[str, tuple[IPAddress, ...]]:
    """Global addresses per interface; anything malformed is left out (it only disables hairpin)."""
    try:
        untrusted_links = json.loads(untrusted_json)
    except ValueError:
        return {}
    if not isinstance(untrusted_links, list):
        return {}
    found: dict[str, tuple[IPAddress, ...]] = {}
    for untrusted_link in untrusted_links:
        if not isinstance(untrusted_link, dict):
            continue
        untrusted_name = untrusted_link.get("ifname")
        if not isinstance(untrusted_name, str) or not 0 < len(untrusted_name) <= 15:
            continue
        addresses = [a for a in map(_address, untrusted_link.get("addr_info") or []) if a]
        if addresses:
            found[untrusted_name] = tuple(sorted(set(addresses), key=lambda a: (a.version, a)))
    return found


def _address(untrusted_info: Any) -> IPAddress | None:
    if not isinstance(untrusted_info, dict) or untrusted_info.get("scope") != "global":
        return None
    untrusted_local = untrusted_info.get("local")
    if not isinstance(untrusted_local, str):
        return None
    try:
        return ipaddress.ip_address(untrusted_local)
    except ValueError:
        return None


def read_interface_addresses() -> dict[str, tuple[IPAddress, ...]]:
    """This namespace's addresses; empty (no hairpin) when `ip` fails."""
    try:
        result = subprocess.run(
            IP_COMMAND, capture_output=True, text=True, timeout=READ_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("cannot read the interface addresses: %s", err)
        return {}
    if result.returncode != 0:
        log.warning("ip addr show failed: %s", result.stderr.strip())
        return {}
    return parse_interface_addresses(result.stdout)
