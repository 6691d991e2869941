"""Asking dom0: every mapping decision goes through the admin service, never decided here.

Calls run in threads (the client library blocks). A request asked again while its call is
under way (clients retransmit) shares that call instead of starting another.
"""

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from ..client import AdminClient, QubesdError
from ..client.admin_client import nat_fields

MAX_IN_FLIGHT = 32
# How long a mapping call may wait in dom0 for the user's answer before reporting "pending".
ASK_WAIT = 110
NO_ADDRESS = ipaddress.IPv4Address(0)

log = logging.getLogger(__name__)


class Verdict(Enum):
    GRANTED = "granted"
    REMOVED = "removed"
    PENDING = "pending"
    REFUSED = "refused"
    NO_RESOURCES = "no-resources"
    FAILED = "failed"


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    address: ipaddress.IPv4Address = NO_ADDRESS
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
    if result != "granted":
        return Answer(Verdict.FAILED, detail=f"unexpected reply {result!r}")
    try:
        return Answer(
            Verdict.GRANTED,
            ipaddress.IPv4Address(fields["address"]),
            int(fields["port"]),
            int(fields["lifetime"]),
        )
    except (KeyError, ValueError):
        return Answer(Verdict.FAILED, detail="malformed grant from dom0")


class Dom0:
    """The admin service as the network qube `qube` sees it."""

    def __init__(self, client: AdminClient, qube: str, wait: int = ASK_WAIT) -> None:
        self.client = client
        self.qube = qube
        self.wait = wait
        self._in_flight: dict[tuple[object, ...], asyncio.Task[Answer]] = {}

    def _ask_blocking(self, ask: Ask) -> Answer:
        wait = 0 if ask.lifetime == 0 else self.wait
        try:
            return _answer_from(self.client.nat_request(self.qube, ask.line(wait)))
        except QubesdError as err:
            if err.exc_type == "PermissionDenied":
                return Answer(Verdict.REFUSED, detail=err.message)
            if "no free outside port" in err.message:
                return Answer(Verdict.NO_RESOURCES, detail=err.message)
            return Answer(Verdict.FAILED, detail=err.message)
        except (OSError, ConnectionError) as err:
            return Answer(Verdict.FAILED, detail=str(err))

    async def ask(self, ask: Ask) -> Answer:
        key = (ask.client, ask.proto, ask.internal_port, ask.lifetime == 0)
        task = self._in_flight.get(key)
        if task is None:
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                return Answer(Verdict.NO_RESOURCES, detail="too many requests under way")
            task = asyncio.create_task(asyncio.to_thread(self._ask_blocking, ask))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
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

    async def address(
        self, client: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> ipaddress.IPv4Address | None:
        def blocking() -> ipaddress.IPv4Address | None:
            try:
                return ipaddress.IPv4Address(self.client.nat_address(self.qube, str(client)))
            except (QubesdError, OSError, ConnectionError, ValueError) as err:
                log.info("outside address for %s: %s", client, err)
                return None

        return await asyncio.to_thread(blocking)


Asker = Callable[[Ask], Awaitable[Answer]]
__all__ = ["Answer", "Ask", "Asker", "Dom0", "Verdict", "nat_fields"]
