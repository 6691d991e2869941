"""Each qube's share of dom0's NAT traversal service, so one qube asking without end is
refused alone: per (netvm, client qube) a request rate, requests under way, and a cap on the
mappings it holds. A refusal is the reply `result=limited limit=… retry-after=…`.
"""

import contextlib
from collections.abc import Iterator, Sequence

from ..model.rate_limit import ClientLimiter, Limit, RateLimit, Refusal
from ..model.rule import Rule
from .nat_mapping import format_reply, is_mapping

# Above what one application needs (a mapping, its renewals and the address query of each
# NAT-PMP client run), well below what a flood sends.
NAT_RATE = RateLimit(burst=32, per_second=8)
NAT_IN_FLIGHT = 8  # a request waiting for the user holds its place until answered
MAX_MAPPINGS = 128  # forwards made by NAT traversal, per qube
MAPPINGS_LIMIT = "mappings"

Owner = tuple[str, str]  # (netvm, client qube)


class MappingQuotaFull(Exception):
    """The qube holds MAX_MAPPINGS forwards made by NAT traversal; a new one is refused."""


def check_mapping_quota(rules: Sequence[Rule]) -> None:
    held = sum(is_mapping(rule, proto, 0) for rule in rules for proto in ("tcp", "udp"))
    if held >= MAX_MAPPINGS:
        raise MappingQuotaFull(f"{held} NAT mappings held, at most {MAX_MAPPINGS}")


def limited_reply(limit: str, retry_after: float) -> bytes:
    return format_reply(result="limited", limit=limit, retry_after=f"{retry_after:.1f}")


def refusal_reply(refusal: Refusal) -> bytes:
    return limited_reply(refusal.limit, refusal.retry_after)


class NatLimits:
    """The shares of every (netvm, client qube); one object per service."""

    def __init__(self, rate: RateLimit = NAT_RATE, in_flight: int = NAT_IN_FLIGHT) -> None:
        self._limiter: ClientLimiter[Owner] = ClientLimiter(rate, in_flight)

    @contextlib.contextmanager
    def share(self, owner: Owner, now: float) -> Iterator[Refusal | None]:
        """None while admitted (its place is given back on leaving), else the refusal."""
        refusal = self._limiter.start(owner, now)
        try:
            yield refusal
        finally:
            if refusal is None:
                self._limiter.finish(owner)


__all__ = ["Limit", "MappingQuotaFull", "NatLimits", "check_mapping_quota", "limited_reply"]
