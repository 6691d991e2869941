"""Asking dom0: every mapping decision goes through the admin service, never decided here.

Calls run in threads of their own (the client library blocks). A request asked again while
its call is under way (clients retransmit) shares that call instead of starting another.
Each client address has its own share of calls (a rate and a number under way), so a qube
flooding its netvm is refused alone (`Verdict.LIMITED`) while the others are served.
"""

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from ..model.rate_limit import ClientLimiter, RateLimit
from ..ports.nat_channel import NatChannel, NatRefused, Refusal

# Calls under way for all clients together: one thread each. A client's share is far
# smaller, so it takes many qubes flooding at once to fill this.
MAX_IN_FLIGHT = 64
CLIENT_IN_FLIGHT = 8  # as dom0's share per qube: an ask waiting for the user holds one
CLIENT_RATE = RateLimit(burst=32, per_second=8)
# How long a mapping call may wait in dom0 for the user's answer before reporting "pending".
ASK_WAIT = 110
NO_ADDRESS = ipaddress.IPv4Address(0)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

THREAD_PREFIX = "dom0-call"

log = logging.getLogger(__name__)


class Verdict(Enum):
    GRANTED = "granted"
    REMOVED = "removed"
    PENDING = "pending"
    REFUSED = "refused"
    NO_RESOURCES = "no-resources"
    LIMITED = "limited"  # this client's share is used up (here or in dom0); temporary
    FAILED = "failed"


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = NO_ADDRESS
    external_port: int = 0
    lifetime: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Ask:
    client: ipaddress.IPv4Address | ipaddress.IPv6Address
    proto: str
    internal_port: int
    external_port: int
    lifetime: int
    origin: str
    description: str = ""
    exact: bool = False

    def line(self, wait: int) -> str:
        text = (
            f"client={self.client} proto={self.proto} internal-port={self.internal_port} "
            f"external-port={self.external_port} lifetime={self.lifetime} "
            f"origin={self.origin} wait={wait}"
        )
        if self.exact:
            text += " exact=1"
        return f"{text} description={self.description}" if self.description else text


def _answer_from(fields: dict[str, str]) -> Answer:
    result = fields.get("result")
    if result == "removed":
        return Answer(Verdict.REMOVED)
    if result == "pending":
        return Answer(Verdict.PENDING, detail=fields.get("id", ""))
    if result == "limited":
        return Answer(Verdict.LIMITED, detail=f"dom0: {fields.get('limit', '')} limit")
    if result != "granted":
        return Answer(Verdict.FAILED, detail=f"unexpected reply {result!r}")
    try:
        return Answer(
            Verdict.GRANTED,
            ipaddress.ip_address(fields["address"]),
            int(fields["port"]),
            int(fields["lifetime"]),
        )
    except (KeyError, ValueError):
        return Answer(Verdict.FAILED, detail="malformed grant from dom0")


Result = TypeVar("Result")
# A call dom0 refused, as natd's protocols report it (LIMITED: dom0's share of this qube).
_VERDICTS = {
    Refusal.DENIED: Verdict.REFUSED,
    Refusal.NO_RESOURCES: Verdict.NO_RESOURCES,
    Refusal.LIMITED: Verdict.LIMITED,
}


class Dom0:
    """Dom0 as the network qube sees it, through its NAT channel."""

    def __init__(
        self,
        channel: NatChannel,
        wait: int = ASK_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.wait = wait
        self.clock = clock
        self.limiter: ClientLimiter[Address] = ClientLimiter(CLIENT_RATE, CLIENT_IN_FLIGHT)
        # Not the loop's default executor: its few threads would be held by asks waiting
        # for the user, and every other client's call would queue behind them.
        self._threads = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix=THREAD_PREFIX)
        self._in_flight: dict[tuple[object, ...], asyncio.Future[object]] = {}
        self._refused: set[Address] = set()  # clients told "limited" since their last call

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _ask_blocking(self, ask: Ask) -> Answer:
        wait = 0 if ask.lifetime == 0 else self.wait
        try:
            return _answer_from(self.channel.request(ask.line(wait)))
        except NatRefused as err:
            verdict = _VERDICTS.get(err.refusal, Verdict.FAILED)
            return Answer(verdict, detail=err.message)

    def _start(
        self, key: tuple[object, ...], client: Address, blocking: Callable[[], Result]
    ) -> "asyncio.Future[Result] | str":
        """The call under way for `key` (joined), a new one, or why this client must wait."""
        task = self._in_flight.get(key)
        if task is not None:
            return task  # type: ignore[return-value]
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            return "too many requests under way from all qubes"
        refusal = self.limiter.start(client, self.clock())
        if refusal is not None:
            if client not in self._refused:  # once per episode: a flood must not flood the log
                self._refused.add(client)
                log.warning("%s: %s", client, refusal.text)
            return refusal.text
        self._refused.discard(client)
        loop = asyncio.get_running_loop()
        started = loop.run_in_executor(self._threads, blocking)

        def done(_: object) -> None:
            self._in_flight.pop(key, None)
            self.limiter.finish(client)

        started.add_done_callback(done)
        self._in_flight[key] = started  # type: ignore[assignment]
        return started

    async def ask(self, ask: Ask) -> Answer:
        key = (ask.client, ask.proto, ask.internal_port, ask.lifetime == 0)
        task = self._start(key, ask.client, lambda: self._ask_blocking(ask))
        if isinstance(task, str):
            return Answer(Verdict.LIMITED, detail=task)
        answer = await asyncio.shield(task)
        log.info(
            "%s %s/%d for %s: %s %s",
            ask.origin,
            ask.proto,
            ask.internal_port,
            ask.client,
            answer.verdict.value,
            answer.detail,
        )
        return answer

    async def address(self, client: Address) -> ipaddress.IPv4Address | Verdict:
        """The outside address `client` is reached at, or why it is not known now."""

        def blocking() -> ipaddress.IPv4Address | Verdict:
            try:
                return ipaddress.IPv4Address(self.channel.address(str(client)))
            except NatRefused as err:
                log.info("outside address for %s: %s", client, err)
                return Verdict.LIMITED if err.refusal is Refusal.LIMITED else Verdict.FAILED
            except ValueError as err:
                log.info("outside address for %s: %s", client, err)
                return Verdict.FAILED

        task = self._start(("address", client), client, blocking)
        if isinstance(task, str):
            return Verdict.LIMITED
        return await asyncio.shield(task)


Asker = Callable[[Ask], Awaitable[Answer]]
AddressLookup = Callable[[Address], Awaitable[ipaddress.IPv4Address | Verdict]]
__all__ = ["AddressLookup", "Answer", "Ask", "Asker", "Dom0", "Verdict"]
