"""The NAT channel over a socket speaking the qubesd protocol, the caller named as `qube`.

The lab gives each network qube such a socket (its qrexec stand-in); the methods are
`admin.vm.portfwd.NatRequest` and `admin.vm.portfwd.NatAddress`. A stock host has no such
socket in a qube: there the channel is a qrexec call (issue 16).
"""

from ..client import AdminClient, QubesdError
from ..ports.nat_channel import NatRefused, Refusal


def refusal_of(err: QubesdError) -> NatRefused:
    """A service's error reply as the port's refusal (the qrexec adapter decodes the same)."""
    if err.exc_type == "PermissionDenied":
        return NatRefused(Refusal.DENIED, err.message)
    if "no free outside port" in err.message:
        return NatRefused(Refusal.NO_RESOURCES, err.message)
    if "too many requests" in err.message:
        return NatRefused(Refusal.LIMITED, err.message)
    return NatRefused(Refusal.FAILED, err.message)


class QubesdSocketNat:
    def __init__(self, client: AdminClient, qube: str) -> None:
        self.client = client
        self.qube = qube

    def request(self, line: str) -> dict[str, str]:
        try:
            return self.client.nat_request(self.qube, line)
        except QubesdError as err:
            raise refusal_of(err) from None
        except (OSError, ConnectionError) as err:
            raise NatRefused(Refusal.FAILED, str(err)) from None

    def address(self, client: str) -> str:
        try:
            return self.client.nat_address(self.qube, client)
        except QubesdError as err:
            raise refusal_of(err) from None
        except (OSError, ConnectionError) as err:
            raise NatRefused(Refusal.FAILED, str(err)) from None
