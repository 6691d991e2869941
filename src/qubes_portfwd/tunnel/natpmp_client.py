"""One NAT-PMP transaction at a time with the provider's gateway (asyncio, bounded).

Retransmits on RFC 6886 §3.1's schedule (250 ms, doubling) but stops after MAX_ATTEMPTS
instead of the RFC's nine (~64 s): a keeper that stays responsive retries later itself.
Answers from any other address are never seen (the socket is connected to the gateway).
"""

import asyncio
import contextlib
import ipaddress
import logging
import time

from ..model.errors import ValidationError
from ..natpmp import wire

FIRST_TIMEOUT = 0.25
MAX_ATTEMPTS = 4  # 0.25 + 0.5 + 1 + 2 = 3.75 s at most per transaction

log = logging.getLogger(__name__)


class NatPmpError(RuntimeError):
    """No usable answer: the gateway was silent or refused."""


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: object) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(data)


class NatPmpClient:
    """Talks to one gateway; `request` returns the matching answer or raises NatPmpError."""

    def __init__(
        self,
        gateway: ipaddress.IPv4Address,
        port: int = wire.NATPMP_PORT,
        *,
        first_timeout: float = FIRST_TIMEOUT,
        attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.gateway = gateway
        self.port = port
        self.first_timeout = first_timeout
        self.attempts = attempts
        self._transport: asyncio.DatagramTransport | None = None
        self._receiver = _Receiver()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self._receiver, remote_addr=(str(self.gateway), self.port)
        )
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def request(self, request: wire.Request) -> wire.Response:
        if self._transport is None:
            await self.open()
        assert self._transport is not None
        while not self._receiver.queue.empty():  # late answers to an earlier request
            self._receiver.queue.get_nowait()
        data = wire.encode_request(request)
        timeout = self.first_timeout
        for _ in range(self.attempts):
            self._transport.sendto(data)
            response = await self._answer(request, timeout)
            if response is not None:
                return response
            timeout *= 2
        raise NatPmpError(f"no answer from {self.gateway}:{self.port}")

    async def _answer(self, request: wire.Request, timeout: float) -> wire.Response | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                untrusted_data = await asyncio.wait_for(self._receiver.queue.get(), remaining)
            except TimeoutError:
                return None
            try:
                response = wire.parse_response(untrusted_data)
            except ValidationError as err:
                log.warning("ignoring a malformed answer from %s: %s", self.gateway, err)
                continue
            if wire.answers(request, response):
                return response
        return None

    async def external_address(self) -> tuple[ipaddress.IPv4Address, int]:
        """The gateway's public address and its epoch."""
        response = await self.request(wire.ExternalAddressRequest())
        if isinstance(response, wire.ErrorResponse):
            raise NatPmpError(f"external address: {response.text}")
        assert isinstance(response, wire.ExternalAddressResponse)
        return response.external_address, response.epoch

    async def map(self, request: wire.MappingRequest) -> wire.MappingResponse:
        response = await self.request(request)
        if isinstance(response, wire.ErrorResponse):
            raise NatPmpError(f"{request.protocol}/{request.internal_port}: {response.text}")
        assert isinstance(response, wire.MappingResponse)
        return response
