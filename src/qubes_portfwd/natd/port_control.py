"""NAT-PMP and PCP on UDP 5351: one datagram in, at most one reply out, per request.

The asking qube is the datagram's source address (the netvm's anti-spoofing guarantees it
on the vif). Malformed datagrams get the protocol's error reply or none; nothing stops the
server. PCP is served in both families (an IPv6 client gets an IPv6 forward); NAT-PMP is
IPv4 only (RFC 6886), so a NAT-PMP datagram from an IPv6 sender is dropped. Every
decision is dom0's (see dom0.py). A client over its share is answered with the protocol's
temporary refusal (NAT-PMP OUT_OF_RESOURCES, PCP USER_EX_QUOTA, RFC 6887 §7.4); datagrams
beyond what can wait for an answer are dropped, as a full queue would.
"""

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from typing import cast

from ..model.errors import ValidationError
from ..natpmp import wire as natpmp
from . import pcp
from .dom0 import AddressLookup, Answer, Ask, Asker, Verdict
from .mappings import MappingTable

MAX_DATAGRAM = 2048
# Requests waiting for their answer, per client and in all; a retransmission waits too.
CLIENT_WAITING = 32
MAX_WAITING = 1024

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NATPMP_RESULT = {
    Verdict.REFUSED: natpmp.ResultCode.NOT_AUTHORIZED,
    Verdict.NO_RESOURCES: natpmp.ResultCode.OUT_OF_RESOURCES,
    # RFC 6886 §3.5 has no per-client code: "out of resources" is the temporary refusal.
    Verdict.LIMITED: natpmp.ResultCode.OUT_OF_RESOURCES,
    Verdict.FAILED: natpmp.ResultCode.NETWORK_FAILURE,
}
_PCP_RESULT = {
    Verdict.REFUSED: pcp.Result.NOT_AUTHORIZED,
    Verdict.NO_RESOURCES: pcp.Result.NO_RESOURCES,
    # NO_RESOURCES is "system-wide, different from USER_EX_QUOTA" (RFC 6887 §7.4).
    Verdict.LIMITED: pcp.Result.USER_EX_QUOTA,
    Verdict.FAILED: pcp.Result.NETWORK_FAILURE,
}


class PortControlServer(asyncio.DatagramProtocol):
    def __init__(self, asker: Asker, address_of: AddressLookup, table: MappingTable) -> None:
        self.asker = asker
        self.address_of = address_of
        self.table = table
        self.started = time.monotonic()
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: Counter[Address] = Counter()

    @property
    def epoch(self) -> int:
        return int(time.monotonic() - self.started) & 0xFFFF_FFFF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, untrusted_data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            sender = ipaddress.ip_address(str(addr[0]))
        except ValueError:
            return
        if self._waiting[sender] >= CLIENT_WAITING or len(self._tasks) >= MAX_WAITING:
            return
        task = asyncio.create_task(self._serve(untrusted_data[:MAX_DATAGRAM], sender, addr))
        self._tasks.add(task)
        self._waiting[sender] += 1

        def done(_: object) -> None:
            self._tasks.discard(task)
            self._waiting[sender] -= 1
            if self._waiting[sender] <= 0:
                del self._waiting[sender]

        task.add_done_callback(done)

    def _send(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    async def _serve(
        self,
        untrusted_data: bytes,
        sender: ipaddress.IPv4Address | ipaddress.IPv6Address,
        addr: tuple[str | object, ...],
    ) -> None:
        try:
            if pcp.is_pcp(untrusted_data):
                reply = await self._pcp(untrusted_data, sender)
            elif sender.version != 4:
                reply = None
            else:
                reply = await self._natpmp(untrusted_data, sender)
        except Exception:  # one bad request must never stop the server
            log.exception("request from %s failed", sender)
            return
        if reply is not None:
            self._send(reply, addr)

    # -- NAT-PMP (RFC 6886) --

    async def _natpmp(
        self, untrusted_data: bytes, sender: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bytes | None:
        try:
            request = natpmp.parse_request(untrusted_data)
        except natpmp.RequestError as err:
            if err.reply_result is None:
                return None
            error = natpmp.ErrorResponse(err.opcode & 0x7F, err.reply_result, self.epoch)
            return natpmp.encode_response(error)
        if isinstance(request, natpmp.ExternalAddressRequest):
            address = await self.address_of(sender)
            if not isinstance(address, ipaddress.IPv4Address):
                verdict = Verdict.LIMITED if address == Verdict.LIMITED else Verdict.FAILED
                error = natpmp.ErrorResponse(0, _NATPMP_RESULT[verdict], self.epoch)
                return natpmp.encode_response(error)
            return natpmp.encode_response(natpmp.ExternalAddressResponse(self.epoch, address))
        ask = Ask(
            sender,
            request.protocol,
            request.internal_port,
            request.suggested_external_port,
            request.lifetime,
            "NAT-PMP",
        )
        answer = await self.asker(ask)
        opcode = natpmp.opcode_for(request.protocol)
        if answer.verdict == Verdict.PENDING:
            return None  # the client retransmits; the user may decide meanwhile
        if answer.verdict == Verdict.REMOVED:
            self.table.forget(sender, request.protocol, request.internal_port)
            response = natpmp.MappingResponse(
                request.protocol, self.epoch, request.internal_port, 0, 0
            )
            return natpmp.encode_response(response)
        if answer.verdict != Verdict.GRANTED:
            error = natpmp.ErrorResponse(opcode, _NATPMP_RESULT[answer.verdict], self.epoch)
            return natpmp.encode_response(error)
        self.table.record(ask, answer)
        response = natpmp.MappingResponse(
            request.protocol,
            self.epoch,
            request.internal_port,
            answer.external_port,
            answer.lifetime,
        )
        return natpmp.encode_response(response)

    # -- PCP (RFC 6887) --

    async def _pcp(
        self, untrusted_data: bytes, sender: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bytes | None:
        request: pcp.PcpRequest | None = None
        try:
            request = pcp.parse_request(untrusted_data)
            if request.client_address != sender:
                raise pcp.PcpError(
                    "client address",
                    "differs from the sender",
                    pcp.Result.ADDRESS_MISMATCH,
                    request.opcode,
                )
            if request.map is None:
                return pcp.encode_response(pcp.Opcode.ANNOUNCE, pcp.Result.SUCCESS, 0, self.epoch)
            return await self._pcp_map(request, request.map, sender)
        except pcp.PcpError as err:
            if err.result is None:
                return None
            return pcp.error_response(request, err, self.epoch, untrusted_data)
        except ValidationError:
            return None

    async def _pcp_map(
        self,
        request: pcp.PcpRequest,
        m: pcp.MapRequest,
        sender: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ) -> bytes | None:
        if m.third_party is not None and m.third_party != sender:
            raise pcp.PcpError(
                "THIRD_PARTY", "mapping for another host", pcp.Result.NOT_AUTHORIZED, pcp.Opcode.MAP
            )
        proto = m.protocol_name
        assert proto is not None
        ask = Ask(
            sender,
            proto,
            m.internal_port,
            m.suggested_external_port,
            request.lifetime,
            "PCP",
            exact=m.prefer_failure,
        )
        answer: Answer = await self.asker(ask)
        if answer.verdict == Verdict.PENDING:
            return None
        if answer.verdict == Verdict.REMOVED:
            self.table.forget(sender, proto, m.internal_port)
            result = pcp.MapResult(m.nonce, m.protocol, m.internal_port, 0, _unspecified(sender))
            return pcp.encode_response(pcp.Opcode.MAP, pcp.Result.SUCCESS, 0, self.epoch, result)
        if answer.verdict != Verdict.GRANTED:
            raise pcp.PcpError("map", answer.detail, _PCP_RESULT[answer.verdict], pcp.Opcode.MAP)
        self.table.record(ask, answer)
        # Dom0 answers in the client's family; an address of the other one is not said.
        address = answer.address if answer.address.version == sender.version else None
        result = pcp.MapResult(
            m.nonce,
            m.protocol,
            m.internal_port,
            answer.external_port,
            address or _unspecified(sender),
        )
        return pcp.encode_response(
            pcp.Opcode.MAP, pcp.Result.SUCCESS, answer.lifetime, self.epoch, result
        )


def _unspecified(sender: Address) -> Address:
    """The all-zeros address of the sender's family: "none" in a PCP reply (RFC 6887 §11.3)."""
    return ipaddress.IPv4Address(0) if sender.version == 4 else ipaddress.IPv6Address(0)
