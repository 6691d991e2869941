"""The keeper's lease book: what to ask the provider next, and what is public now (pure).

Times are the keeper's monotonic clock, passed in. A lease is renewed at half its granted
lifetime (RFC 6886 §3.3 suggests renewing at half); a failed request is retried with a
doubling back-off capped well inside the lease, so one lost answer never loses the port.
"""

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..model.forward_status import public_key
from .wanted import MappingKey

MIN_RENEW = 1.0  # seconds: never hammer a provider that grants tiny lifetimes
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Lease:
    """One mapping as the provider last granted it (public_port 0: none granted yet)."""

    key: MappingKey
    public_port: int = 0
    lifetime: int = 0
    granted_at: float = 0.0
    next_request: float = 0.0
    failures: int = 0
    error: str | None = None

    def valid(self, now: float) -> bool:
        return self.public_port != 0 and now < self.granted_at + self.lifetime


@dataclass(frozen=True)
class Map:
    """Ask for (or renew) `key`, suggesting the port we hold or, first, the same port."""

    key: MappingKey
    suggested_port: int


@dataclass(frozen=True)
class Unmap:
    key: MappingKey


Action = Map | Unmap


def due_actions(
    wanted: Mapping[MappingKey, object], leases: Mapping[MappingKey, Lease], now: float
) -> list[Action]:
    """Removals first (they free provider ports), then new and due renewals, in port order."""
    actions: list[Action] = [Unmap(key) for key in sorted(leases) if key not in wanted]
    for key in sorted(wanted):
        lease = leases.get(key)
        if lease is None:
            actions.append(Map(key, key.port))
        elif now >= lease.next_request:
            actions.append(Map(key, lease.public_port or key.port))
    return actions


def next_wakeup(
    wanted: Mapping[MappingKey, object], leases: Mapping[MappingKey, Lease], now: float
) -> float:
    """The earliest time something falls due (`now` if something already is)."""
    if any(key not in wanted for key in leases) or any(key not in leases for key in wanted):
        return now
    times = [lease.next_request for key, lease in leases.items() if key in wanted]
    return min(times, default=float("inf"))


def granted(
    key: MappingKey, public_port: int, lifetime: int, now: float, previous: Lease | None
) -> Lease:
    del previous  # a grant replaces whatever was held: the provider's word is current
    return Lease(
        key=key,
        public_port=public_port,
        lifetime=lifetime,
        granted_at=now,
        next_request=now + max(MIN_RENEW, lifetime / 2),
    )


def failed(key: MappingKey, error: str, now: float, previous: Lease | None) -> Lease:
    """Keep what is still valid; retry sooner than it runs out."""
    lease = previous or Lease(key)
    failures = lease.failures + 1
    delay = min(MAX_BACKOFF, MIN_RENEW * 2 ** (failures - 1))
    if lease.valid(now):
        # Retry at least twice more before the grant runs out.
        delay = min(delay, max(MIN_RENEW / 2, (lease.granted_at + lease.lifetime - now) / 3))
    return replace(lease, failures=failures, error=error, next_request=now + delay)


def renew_all_now(leases: Mapping[MappingKey, Lease], now: float) -> dict[MappingKey, Lease]:
    """After the provider lost its state (a reboot, RFC 6886 §3.6): ask for everything again."""
    return {key: replace(lease, next_request=now) for key, lease in leases.items()}


def public_entries(
    wanted: Mapping[MappingKey, frozenset[str]],
    leases: Mapping[MappingKey, Lease],
    address: ipaddress.IPv4Address | None,
    now: float,
) -> dict[str, str]:
    """`/qubes-portfwd-public/<id>/<proto>/<port>` = `ADDR:PORT` for every valid lease."""
    if address is None:
        return {}
    entries = {}
    for key, forward_ids in wanted.items():
        lease = leases.get(key)
        if lease is None or not lease.valid(now):
            continue
        for forward_id in sorted(forward_ids):
            entries[public_key(forward_id, key.proto, key.port)] = f"{address}:{lease.public_port}"
    return entries
