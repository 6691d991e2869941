"""WANIPConnection's actions, answered for the sender only (its mappings, its address)."""

import ipaddress

from .dom0 import AddressLookup, Ask, Asker, Verdict
from .mappings import Mapping, MappingTable
from .upnp_soap import (
    ACTION_FAILED,
    ARRAY_INDEX_INVALID,
    CONFLICT,
    INVALID_ACTION,
    INVALID_ARGS,
    NO_SUCH_ENTRY,
    NOT_AUTHORIZED,
    REMOTE_HOST_WILDCARD_ONLY,
    WILDCARD_EXTERNAL_PORT,
    SoapCall,
    SoapError,
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# IGD v1: a lease of 0 means "static"; we ask for a week and dom0's policy caps it.
STATIC_LEASE = 7 * 24 * 3600
_REFUSAL = {
    Verdict.REFUSED: SoapError(NOT_AUTHORIZED, "Action not authorized"),
    Verdict.PENDING: SoapError(NOT_AUTHORIZED, "Action not authorized: waiting for the user"),
    Verdict.NO_RESOURCES: SoapError(CONFLICT, "ConflictInMappingEntry"),
    # UPnP has no rate-limit error; 501 is the one a control point may retry later.
    Verdict.LIMITED: SoapError(ACTION_FAILED, "Action Failed: too many requests, retry later"),
    Verdict.FAILED: SoapError(ACTION_FAILED, "Action Failed"),
}


def _protocol(call: SoapCall) -> str:
    proto = call.text("NewProtocol").lower()
    if proto not in ("tcp", "udp"):
        raise SoapError(INVALID_ARGS, "Invalid Args: NewProtocol must be TCP or UDP")
    return proto


def _wildcard_remote(call: SoapCall) -> None:
    if call.text("NewRemoteHost") not in ("", "*"):
        raise SoapError(REMOTE_HOST_WILDCARD_ONLY, "RemoteHostOnlySupportsWildcard")


def _own(mapping: Mapping | None, sender: Address) -> Mapping:
    # Another qube's mappings are not this qube's business: answered as absent.
    if mapping is None or mapping.client != sender:
        raise SoapError(NO_SUCH_ENTRY, "NoSuchEntryInArray")
    return mapping


def _entry(mapping: Mapping, now: float) -> dict[str, str | int]:
    return {
        "NewInternalPort": mapping.internal_port,
        "NewInternalClient": str(mapping.client),
        "NewEnabled": 1,
        "NewPortMappingDescription": mapping.description,
        "NewLeaseDuration": mapping.remaining(now),
    }


class WanIpConnection:
    def __init__(self, asker: Asker, address_of: AddressLookup, table: MappingTable) -> None:
        self.asker = asker
        self.address_of = address_of
        self.table = table

    async def call(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        handler = {
            "GetStatusInfo": self._status,
            "GetConnectionTypeInfo": self._type_info,
            "GetExternalIPAddress": self._external_address,
            "AddPortMapping": self._add,
            "AddAnyPortMapping": self._add_any,
            "DeletePortMapping": self._delete,
            "GetSpecificPortMappingEntry": self._specific,
            "GetGenericPortMappingEntry": self._generic,
        }.get(call.action)
        if handler is None:
            raise SoapError(INVALID_ACTION, "Invalid Action")
        return await handler(call, sender)

    async def _status(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        return {
            "NewConnectionStatus": "Connected",
            "NewLastConnectionError": "ERROR_NONE",
            "NewUptime": 0,
        }

    async def _type_info(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        return {"NewConnectionType": "IP_Routed", "NewPossibleConnectionTypes": "IP_Routed"}

    async def _external_address(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        address = await self.address_of(sender)
        if address == Verdict.LIMITED:
            raise _REFUSAL[Verdict.LIMITED]
        if not isinstance(address, ipaddress.IPv4Address):
            raise SoapError(ACTION_FAILED, "Action Failed: outside address unknown")
        return {"NewExternalIPAddress": str(address)}

    async def _map(self, call: SoapCall, sender: Address, exact: bool) -> int:
        _wildcard_remote(call)
        proto = _protocol(call)
        external = call.number("NewExternalPort", 65535)
        if exact and external == 0:
            raise SoapError(WILDCARD_EXTERNAL_PORT, "WildCardNotPermittedInExtPort")
        internal = call.number("NewInternalPort", 65535)
        if internal == 0:
            raise SoapError(INVALID_ARGS, "Invalid Args: NewInternalPort must be 1-65535")
        try:
            client = ipaddress.ip_address(call.text("NewInternalClient"))
        except ValueError:
            raise SoapError(INVALID_ARGS, "Invalid Args: NewInternalClient") from None
        if client != sender:
            raise SoapError(NOT_AUTHORIZED, "Action not authorized: NewInternalClient is not you")
        lease = call.number("NewLeaseDuration", 0xFFFF_FFFF) or STATIC_LEASE
        enabled = call.text("NewEnabled") not in ("0", "false")
        ask = Ask(
            sender,
            proto,
            internal,
            external,
            lease if enabled else 0,
            "UPnP",
            call.text("NewPortMappingDescription"),
            exact=exact,
        )
        answer = await self.asker(ask)
        if answer.verdict == Verdict.REMOVED:
            self.table.forget(sender, proto, internal)
            return 0
        if answer.verdict != Verdict.GRANTED:
            raise _REFUSAL[answer.verdict]
        self.table.record(ask, answer)
        return answer.external_port

    async def _add(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        await self._map(call, sender, exact=True)
        return {}

    async def _add_any(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        return {"NewReservedPort": await self._map(call, sender, exact=False)}

    async def _delete(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        _wildcard_remote(call)
        proto = _protocol(call)
        mapping = _own(self.table.by_outside(proto, call.number("NewExternalPort", 65535)), sender)
        ask = Ask(sender, proto, mapping.internal_port, mapping.external_port, 0, "UPnP")
        answer = await self.asker(ask)
        if answer.verdict != Verdict.REMOVED:
            raise _REFUSAL.get(answer.verdict, _REFUSAL[Verdict.FAILED])
        self.table.forget(sender, proto, mapping.internal_port)
        return {}

    async def _specific(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        _wildcard_remote(call)
        proto = _protocol(call)
        mapping = _own(self.table.by_outside(proto, call.number("NewExternalPort", 65535)), sender)
        return _entry(mapping, self.table.clock())

    async def _generic(self, call: SoapCall, sender: Address) -> dict[str, str | int]:
        index = call.number("NewPortMappingIndex", 0xFFFF)
        own = [m for m in self.table.listing() if m.client == sender]
        if index >= len(own):
            raise SoapError(ARRAY_INDEX_INVALID, "SpecifiedArrayIndexInvalid")
        mapping = own[index]
        return {
            "NewRemoteHost": "",
            "NewExternalPort": mapping.external_port,
            "NewProtocol": mapping.proto.upper(),
            **_entry(mapping, self.table.clock()),
        }
