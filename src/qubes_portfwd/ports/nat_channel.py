"""Port: a network qube asks dom0 about NAT traversal (natd's only way to dom0).

The qube sends a request line (`natd.mappings`' form, untrusted for dom0) and gets the
reply's fields, or asks where a client behind it is reached from outside. Dom0 decides;
the qube never creates rules. The lab's adapter is a per-qube socket speaking the qubesd
protocol (`adapters/qubesd_socket_nat.py`); on a stock host it is a qrexec call to our dom0
service (issue 16).
"""

from enum import Enum
from typing import Protocol


class Refusal(Enum):
    DENIED = "denied"  # dom0 refuses this qube the call (not behind it, not allowed)
    NO_RESOURCES = "no-resources"  # no free outside port
    LIMITED = "limited"  # this qube's share in dom0 is used up, for now
    FAILED = "failed"  # anything else: dom0 unreachable, malformed reply


class NatRefused(Exception):
    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(f"{refusal.value}: {message}")
        self.refusal = refusal
        self.message = message


class NatChannel(Protocol):
    def request(self, line: str) -> dict[str, str]:
        """Ask (or renew, or with lifetime=0 remove) a mapping; the reply's fields.

        Raises NatRefused; blocks for as long as dom0 takes (an ask may wait for the user).
        """
        ...

    def address(self, client: str) -> str:
        """The outside address the world reaches `client` (a qube behind this one) at."""
        ...
