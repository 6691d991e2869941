"""A few network namespaces of this test's own, laid out as Qubes does (the lab's layout and
Qubes' base rules), for our agents beside the qubes' real QubesDB; removed by exact name."""

import os
from collections.abc import Sequence
from typing import Any

from qubes_lab import layout, netns
from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_portfwd.model.topology import Qube, Topology

EDGE_ADDRESS = "192.0.2.2/24"  # TEST-NET-1, only inside the edge's own namespace


def topology_of(spec: Sequence[dict[str, Any]]) -> Topology:
    """The spec's qubes with the qids core-admin gives them (its template is qid 1)."""
    return Topology.of(
        *(
            Qube(
                q["name"],
                position,
                netvm=q.get("netvm"),
                provides_network=bool(q.get("provides_network")),
            )
            for position, q in enumerate(spec, start=2)
        )
    )


def lab_tag() -> str:
    return f"stk{os.getpid() % 100000}"


def build(tag: str, topology: Topology) -> dict[str, str]:
    """One namespace per qube, their veths, addresses, routes and Qubes' base rules."""
    names = {q: layout.netns_name(tag, q) for q in topology.qubes}
    try:
        for name in names.values():
            netns.add(name)
        for veth in layout.qube_veths(tag, topology):
            netns.ip_batch(veth.netns_a, [veth.add_command()])
        for qube in topology.qubes.values():
            setup = layout.qube_setup(tag, topology, qube)
            commands = list(setup.commands)
            if qube.netvm is None and qube.provides_network:
                commands = [
                    # The uplink (no dummy driver here): a veth whose peer stays unplugged.
                    "link add eth0 type veth peer name uplink-end",
                    "link set uplink-end up",
                    f"link set eth0 group {layout.UPLINK_GROUP} up",
                    f"addr add {EDGE_ADDRESS} dev eth0",
                    *commands,
                ]
            netns.ip_batch(setup.netns, commands)
            netns.sysctls(setup.netns, dict(setup.sysctls))
            downstream = tuple(
                Downstream(layout.vif_name(d), d.address4) for d in topology.downstream(qube.name)
            )
            netns.nft_load(
                setup.netns, base_ruleset(BaseParams(qube.provides_network, False, downstream))
            )
    except BaseException:
        remove(names)
        raise
    return names


def remove(names: dict[str, str]) -> None:
    for name in names.values():
        netns.delete(name)
