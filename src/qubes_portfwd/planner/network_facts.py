"""The topology's answers the planner needs for every forward, worked out once per plan.

Qubes' addresses are derived from text and paths walk the netvm chain; with thousands of
forwards through the same few qubes, asking once per qube keeps planning linear.
"""

from ..model.entries import IPAddress
from ..model.topology import PathError, Qube, Topology


class NetworkFacts:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._addresses = {
            (qube.name, family): qube.address(family)
            for qube in topology.qubes.values()
            for family in (4, 6)
        }
        self._paths: dict[str, tuple[str, ...] | PathError] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.topology

    def __getitem__(self, name: str) -> Qube:
        return self.topology[name]

    def address(self, name: str, family: int) -> IPAddress | None:
        """The qube's address in `family`; None when it has none or does not exist."""
        return self._addresses.get((name, family))

    def path(self, name: str) -> tuple[str, ...]:
        """`Topology.path`, remembered (its PathError too)."""
        if name not in self._paths:
            try:
                self._paths[name] = self.topology.path(name)
            except PathError as err:
                self._paths[name] = err
        found = self._paths[name]
        if isinstance(found, PathError):
            raise found
        return found


NetworkView = tuple[tuple[object, ...], ...]


def network_view(topology: Topology) -> NetworkView:
    """Everything of the topology a plan reads: equal views give the same drafts."""
    return tuple(
        (q.name, q.netvm, q.provides_network, q.address4, q.address6, q.is_tunnel, q.uplink)
        for q in sorted(topology.qubes.values(), key=lambda q: q.name)
    )
