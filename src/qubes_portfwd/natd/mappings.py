"""What this daemon was granted, for UPnP's listing actions (dom0 keeps the real forwards).

An entry lives until its lifetime ends or its client removes it; a forward removed in dom0
by the user still shows here until then (the next renewal asks dom0 again). IPv4 and IPv6
mappings are apart: the same outside port may be mapped once in each family.
"""

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from .dom0 import Answer, Ask

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Mapping:
    client: Address
    proto: str
    internal_port: int
    external_port: int
    description: str
    expires: float

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires - now))


class MappingTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_outside: dict[tuple[int, str, int], Mapping] = {}

    def _expire(self) -> None:
        now = self.clock()
        for key, mapping in list(self._by_outside.items()):
            if mapping.expires <= now:
                del self._by_outside[key]

    def record(self, ask: Ask, answer: Answer) -> None:
        self._expire()
        self.forget(ask.client, ask.proto, ask.internal_port)
        if len(self._by_outside) >= MAX_ENTRIES:
            return
        self._by_outside[(ask.client.version, ask.proto, answer.external_port)] = Mapping(
            ask.client,
            ask.proto,
            ask.internal_port,
            answer.external_port,
            ask.description,
            self.clock() + answer.lifetime,
        )

    def forget(self, client: Address, proto: str, internal_port: int) -> None:
        for key, mapping in list(self._by_outside.items()):
            if (mapping.client, mapping.proto) == (client, proto) and (
                internal_port == 0 or mapping.internal_port == internal_port
            ):
                del self._by_outside[key]

    def by_outside(self, proto: str, external_port: int, family: int = 4) -> Mapping | None:
        self._expire()
        return self._by_outside.get((family, proto, external_port))

    def listing(self) -> list[Mapping]:
        self._expire()
        return [self._by_outside[k] for k in sorted(self._by_outside)]
