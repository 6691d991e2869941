"""Fair shares of a service: per-client request rate (token bucket) and requests under way.

Pure: the time is an argument. The caller keeps one `ClientLimiter` per service and calls
`start` before the work and `finish` after it, whatever the outcome.
"""

from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class Limit(StrEnum):
    """Which share a refused request would have gone over."""

    RATE = "rate"
    IN_FLIGHT = "in-flight"


@dataclass(frozen=True)
class RateLimit:
    """At most `burst` requests at once, refilled at `per_second`."""

    burst: float
    per_second: float


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated: float

    def refilled(self, rate: RateLimit, now: float) -> "Bucket":
        # A clock stepping back (a wall clock set by hand) refills nothing rather than
        # draining the bucket.
        elapsed = max(0.0, now - self.updated)
        return Bucket(min(rate.burst, self.tokens + elapsed * rate.per_second), now)


@dataclass(frozen=True)
class Refusal:
    limit: Limit
    retry_after: float  # seconds until the share has room again (0: when one finishes)

    @property
    def text(self) -> str:
        if self.limit == Limit.RATE:
            return f"too many requests from this client; retry in {self.retry_after:.1f} s"
        return "too many requests from this client under way"


class ClientLimiter(Generic[Key]):
    """Per key: a token bucket of new requests and a cap of requests under way."""

    def __init__(self, rate: RateLimit, in_flight: int, max_keys: int = 4096) -> None:
        self.rate = rate
        self.in_flight = in_flight
        self.max_keys = max_keys
        self._buckets: dict[Key, Bucket] = {}
        self._running: dict[Key, int] = {}

    def start(self, key: Key, now: float) -> Refusal | None:
        """Admit one request for `key` (None) or say which share it would exceed."""
        if self._running.get(key, 0) >= self.in_flight:
            return Refusal(Limit.IN_FLIGHT, 0.0)
        bucket = self._buckets.get(key, Bucket(self.rate.burst, now)).refilled(self.rate, now)
        if bucket.tokens < 1:
            self._buckets[key] = bucket
            wait = (1 - bucket.tokens) / self.rate.per_second if self.rate.per_second else 0.0
            return Refusal(Limit.RATE, wait)
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._forget_idle(now)
        self._buckets[key] = Bucket(bucket.tokens - 1, now)
        self._running[key] = self._running.get(key, 0) + 1
        return None

    def finish(self, key: Key) -> None:
        left = self._running.get(key, 0) - 1
        if left > 0:
            self._running[key] = left
        else:
            self._running.pop(key, None)

    def running(self, key: Key) -> int:
        return self._running.get(key, 0)

    @property
    def tracked(self) -> int:
        """How many clients' buckets are kept (bounded by `max_keys` when some are idle)."""
        return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        """Drop clients with nothing under way and a full bucket: they start afresh anyway."""
        for key, bucket in list(self._buckets.items()):
            full = bucket.refilled(self.rate, now).tokens >= self.rate.burst
            if full and key not in self._running:
                del self._buckets[key]
