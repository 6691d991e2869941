"""Firewall rules as values: Qubes' accept/drop rules and this project's forward rules."""

import hashlib
import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from .hosts import DstHost, Network
from .ports import PortRange


class Action(StrEnum):
    ACCEPT = "accept"
    DROP = "drop"
    FORWARD = "forward"


class ForwardType(StrEnum):
    EXTERNAL = "external"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ExpireAt:
    """Expires at a UNIX time (seconds), as Qubes' `expire=`."""

    timestamp: int

    def expired(self, now: float, boot_id: str) -> bool:
        return self.timestamp <= now

    @property
    def text(self) -> str:
        return str(self.timestamp)


@dataclass(frozen=True, slots=True)
class UntilReboot:
    """Lasts until the host reboots: bound to the boot id it was made in.

    `boot_id` is None only in a request, before the admin service binds it.
    """

    boot_id: str | None = None

    def expired(self, now: float, boot_id: str) -> bool:
        return self.boot_id != boot_id

    @property
    def text(self) -> str:
        return "boot" if self.boot_id is None else f"boot:{self.boot_id}"


Expiry = ExpireAt | UntilReboot


@dataclass(frozen=True, slots=True)
class FilterRule:
    """Qubes' outbound rule (`action=accept|drop`), field for field."""

    action: Action
    proto: str | None = None
    dsthost: DstHost | None = None
    dstports: PortRange | None = None
    icmptype: int | None = None
    specialtarget: str | None = None
    expire: ExpireAt | None = None
    comment: str | None = None


QubeName = str
Source = Network | QubeName


@dataclass(frozen=True, slots=True)
class ForwardRule:
    """`action=forward`: expose `srcports` on the path's edge (or the netvm) as `dstports`.

    `srchost` holds networks for external forwards and qube names for internal ones,
    in the order written. `via` is the netvm path the forward was made for (target's
    netvm first); `follow` makes it follow netvm changes instead.
    """

    forwardtype: ForwardType
    srcports: PortRange
    dstports: PortRange
    srchost: tuple[Source, ...]
    proto: str | None = None
    via: tuple[QubeName, ...] | None = None
    follow: bool = False
    expire: Expiry | None = None
    comment: str | None = None

    @property
    def action(self) -> Action:
        return Action.FORWARD

    @property
    def protos(self) -> tuple[str, ...]:
        return (self.proto,) if self.proto else ("tcp", "udp")

    @property
    def families(self) -> tuple[int, ...]:
        """IP versions this forward is planned for; internal ones take both where possible."""
        networks = [s for s in self.srchost if not isinstance(s, str)]
        if not networks:
            return (4, 6)
        return (networks[0].version,)

    @property
    def source_networks(self) -> tuple[Network, ...]:
        return tuple(s for s in self.srchost if not isinstance(s, str))

    @property
    def source_qubes(self) -> tuple[QubeName, ...]:
        return tuple(s for s in self.srchost if isinstance(s, str))

    def identity_text(self) -> str:
        """What makes a forward the same forward: not its path, expiry or comment."""
        # The order sources are written in does not change who may connect.
        sources = ",".join(sorted(str(s) for s in self.srchost))
        return "|".join(
            (self.forwardtype, self.proto or "any", self.srcports.text, self.dstports.text, sources)
        )


Rule = FilterRule | ForwardRule


def forward_id(target: QubeName, rule: ForwardRule) -> str:
    """A stable id: the same for this forward in every view, every qube and every run."""
    digest = hashlib.sha256(f"{target}|{rule.identity_text()}".encode()).hexdigest()
    return digest[:12]


def is_wildcard(network: Network) -> bool:
    return network.prefixlen == 0


ANY4 = ipaddress.IPv4Network("0.0.0.0/0")
ANY6 = ipaddress.IPv6Network("::/0")
