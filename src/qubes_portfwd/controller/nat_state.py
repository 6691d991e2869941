"""What dom0 keeps for NAT traversal besides the rules: policies, pending asks, shares."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .nat_limits import NatLimits
from .nat_mapping import NatAsk
from .nat_policy import Decision, PolicyFile
from .pending import MAX_PENDING_PER_OWNER, PendingTable

Grant = dict[str, object]


@dataclass
class NatState:
    policies: PolicyFile
    pending: PendingTable[tuple[NatAsk, Decision], Grant]
    limits: NatLimits

    @classmethod
    def open(cls, state_dir: Path, clock: Callable[[], float]) -> "NatState":
        return cls(
            PolicyFile(state_dir),
            PendingTable(
                clock,
                key=lambda item: item[0].identity,
                owner=lambda item: (item[0].via, item[0].qube),
                per_owner=MAX_PENDING_PER_OWNER,
            ),
            NatLimits(),
        )
