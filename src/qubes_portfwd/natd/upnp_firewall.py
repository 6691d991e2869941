"""WANIPv6FirewallControl:1 (UPnP IGD 2) answered as a Qubes network qube really is (pure).

A pinhole opens the firewall to the client's own IPv6 address, with no translation. A qube's
IPv6 address is Qubes' private fd09:24ef:4179::/48, masqueraded by sys-net: no pinhole
could make it reachable from outside. So the firewall says so (enabled, inbound pinholes not
allowed) and refuses AddPinhole with 703; there is never a pinhole to update, check or delete
(704). An application wanting to be reached over IPv6 asks with PCP over IPv6 instead, which
gives an outside address and port dom0 decides on.
"""

from .upnp_soap import INVALID_ACTION, SoapCall, SoapError

INBOUND_PINHOLE_NOT_ALLOWED = 703
NO_SUCH_PINHOLE = 704
_ON_A_PINHOLE = frozenset(
    {"UpdatePinhole", "DeletePinhole", "CheckPinholeWorking", "GetPinholePackets"}
)


def firewall_call(call: SoapCall) -> dict[str, str | int]:
    """The response arguments of one action, or SoapError."""
    if call.action == "GetFirewallStatus":
        return {"FirewallEnabled": 1, "InboundPinholeAllowed": 0}
    if call.action == "AddPinhole":
        raise SoapError(
            INBOUND_PINHOLE_NOT_ALLOWED,
            "InboundPinholeNotAllowed: a qube's IPv6 address is not reachable from outside; "
            "use PCP over IPv6",
        )
    if call.action in _ON_A_PINHOLE:
        raise SoapError(NO_SUCH_PINHOLE, "NoSuchEntry: no pinhole has this UniqueID")
    raise SoapError(INVALID_ACTION, "Invalid Action")
