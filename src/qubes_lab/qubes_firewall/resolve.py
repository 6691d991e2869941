"""Resolve the dsthost names of firewall rules inside the qube, as Qubes' firewall does."""

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .entries import IPAddress

RESOLVE_TIMEOUT = 5.0  # seconds for all names together; a slow resolver must not stall applies


@dataclass(frozen=True)
class Resolved:
    """Addresses per name (both families mixed) and, per (name, family), why none was found."""

    addresses: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    failures: Mapping[tuple[str, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "addresses", MappingProxyType(dict(self.addresses)))
        object.__setattr__(self, "failures", MappingProxyType(dict(self.failures)))


async def _resolve_one(name: str, family: int) -> tuple[IPAddress, ...]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        name, None, family=socket.AF_INET6 if family == 6 else socket.AF_INET
    )
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address.version == family and address not in found:
            found.append(address)
    if not found:
        raise OSError(f"no IPv{family} address")
    return tuple(sorted(found, key=int))


async def resolve_names(
    names: Mapping[str, set[int]], timeout: float = RESOLVE_TIMEOUT
) -> Resolved:
    """Look every name up for the families that need it, all at once, within `timeout`."""
    wanted = sorted((name, family) for name, families in names.items() for family in families)
    if not wanted:
        return Resolved()
    tasks = [asyncio.ensure_future(_resolve_one(name, family)) for name, family in wanted]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    addresses: dict[str, list[IPAddress]] = {}
    failures: dict[tuple[str, int], str] = {}
    for (name, family), task in zip(wanted, tasks, strict=True):
        if task in pending:
            failures[(name, family)] = f"resolving {name} (IPv{family}) took over {timeout} s"
            continue
        error = task.exception()
        if error is not None:
            failures[(name, family)] = f"failed to resolve {name} (IPv{family}): {error}"
            continue
        addresses.setdefault(name, []).extend(task.result())
    return Resolved({name: tuple(found) for name, found in addresses.items()}, failures)


def unresolved_sources(
    dsthosts: Mapping[IPAddress, set[str]], resolved: Resolved
) -> dict[IPAddress, str]:
    """Sources whose rules name a host not found for their family, with the reason.

    As in Qubes' firewall, one unresolvable name makes that source's whole rule list fail.
    """
    reasons: dict[IPAddress, str] = {}
    for source, names in dsthosts.items():
        for name in sorted(names):
            failure = resolved.failures.get((name, source.version))
            if failure is not None:
                reasons[source] = f"{failure}; traffic from {source} is blocked"
                break
    return reasons
