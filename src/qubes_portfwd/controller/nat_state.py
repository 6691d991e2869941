"""What dom0 keeps for NAT traversal besides the rules and policies: pending asks, shares.

Policies are features of their qubes (nat_policy.py). A `nat-policy.json` left by an older
controller is moved into those features once, at start (`migrate_policy_file`).
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..model.errors import ValidationError
from ..ports.dom0_host import Dom0Host
from .nat_limits import NatLimits
from .nat_mapping import NatAsk
from .nat_policy import FEATURE_POLICY, Decision, parse_policy, policy_value
from .pending import MAX_PENDING_PER_OWNER, PendingTable

Grant = dict[str, object]
POLICY_FILE = "nat-policy.json"  # where older controllers kept every qube's policy
MIGRATED_SUFFIX = ".migrated"

log = logging.getLogger(__name__)


@dataclass
class NatState:
    pending: PendingTable[tuple[NatAsk, Decision], Grant]
    limits: NatLimits

    @classmethod
    def open(cls, host: Dom0Host, clock: Callable[[], float]) -> "NatState":
        migrate_policy_file(host)
        return cls(
            PendingTable(
                clock,
                key=lambda item: item[0].identity,
                owner=lambda item: (item[0].via, item[0].qube),
                per_owner=MAX_PENDING_PER_OWNER,
            ),
            NatLimits(),
        )


def migrate_policy_file(host: Dom0Host) -> None:
    """Each qube's policy in an old `nat-policy.json` becomes its `portfwd-nat-policy`.

    A feature already set wins (it was written later). The file is renamed only after the
    features are stored, so a crash in between migrates again, to the same result; it is
    kept (renamed) so a policy of a qube that no longer exists is not silently lost.
    """
    path = host.state_dir / POLICY_FILE
    if not path.exists():
        return
    document = json.loads(path.read_bytes())
    topology = host.topology
    moved = []
    for qube, text in sorted(document.get("qubes", {}).items()):
        if qube not in topology:
            log.warning("NAT policy of %s not migrated: no such qube (kept in %s)", qube, path)
            continue
        if FEATURE_POLICY in topology[qube].features:
            continue
        try:
            lines = parse_policy(str(text))
        except ValidationError as err:
            log.warning("NAT policy of %s not migrated: %s", qube, err)
            continue
        if not lines:
            continue
        features = {**topology[qube].features, FEATURE_POLICY: policy_value(lines)}
        topology = topology.replace_qube(topology[qube].with_changes(features=features))
        moved.append(qube)
    if moved:
        host.commit_topology(topology, host.explicit)
    path.rename(path.with_name(POLICY_FILE + MIGRATED_SUFFIX))
    log.info("NAT policies moved into feature %s: %s", FEATURE_POLICY, ", ".join(moved) or "none")
