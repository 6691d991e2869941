"""The default lab topology and short ways to write rules, for the planner's tests."""

from collections.abc import Mapping

from qubes_portfwd.model.rule import Rule
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.topology import Qube, Topology

NOW = 1_000_000.0
BOOT = "5f1c0de0-boot"


def lab_topology(*, ipv6: bool = False) -> Topology:
    """sys-net -> sys-firewall -> work, personal, sys-vpn (tunnel on wg0) -> vpn-work."""
    v6 = {"ipv6": "1"} if ipv6 else {}
    return Topology.of(
        Qube("sys-net", 2, klass="StandaloneVM", provides_network=True, features=v6),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True, features=v6),
        Qube("work", 6, netvm="sys-firewall", features=v6),
        Qube("personal", 7, netvm="sys-firewall", features=v6),
        Qube(
            "sys-vpn",
            8,
            netvm="sys-firewall",
            provides_network=True,
            features={**v6, "portfwd-tunnel": "1", "portfwd-uplink": "wg0"},
        ),
        Qube("vpn-work", 9, netvm="sys-vpn", features=v6),
    )


def rules(*lines: str) -> list[Rule]:
    return [parse_rule(line) for line in lines]


def forward_keys(entries: Mapping[str, str]) -> list[str]:
    return sorted(k for k in entries if k.startswith("/qubes-portfwd/"))
