"""The nft scripts of the bench chain: Qubes' base rules plus one design of forwards (pure).

Two designs of the same forwards at the edge: `map`, our compiler's output (one verdict-map
lookup whatever the count), and `linear`, one DNAT rule and one accept rule per forward as
Docker, firewalld, miniupnpd and the manual Qubes method write them. The forward under test
(edge tcp 7000-7001 -> work) is always the last one added, so the linear design walks every
other forward's rules before reaching it.
"""

from collections.abc import Sequence
from enum import StrEnum

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_portfwd.model.entries import DnatHop, Hop, parse_hop
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import OwnedJumps

from .layout import (
    EDGE_LAN,
    FW,
    FW_VIF,
    IPERF_PORT,
    LAN_NETWORK,
    LATENCY_PORT,
    RELAY_PORT_OFFSET,
    WORK,
    WORK_VIF,
)

MEASURED_ID = "ffffffffffff"  # the highest id: the compiler, too, lists it last
BACKGROUND_FIRST_PORT = 10000
MAX_FORWARDS = 50000  # background ports stay below 65536
SERVICE_PORTS = f"{LATENCY_PORT}-{IPERF_PORT}"
RELAY_PORTS = f"{LATENCY_PORT + RELAY_PORT_OFFSET}-{IPERF_PORT + RELAY_PORT_OFFSET}"


class Design(StrEnum):
    MAP = "map"
    LINEAR = "linear"


def _hop(forward_id: str, value: str) -> Hop:
    return parse_hop(f"/qubes-portfwd/{forward_id}/4", value)


def measured_hop(to: str) -> Hop:
    return _hop(
        MEASURED_ID,
        f"role=dnat family=4 proto=tcp in=eth0 ports={SERVICE_PORTS} to={to} "
        f"toports={SERVICE_PORTS} srchost={LAN_NETWORK}",
    )


def background_hops(count: int) -> list[DnatHop]:
    """`count` other forwards at the edge, each its own port, all toward fw as on Qubes."""
    if not 0 <= count < MAX_FORWARDS:
        raise ValueError(f"background forwards: expected 0-{MAX_FORWARDS - 1}, not {count}")
    hops = []
    for n in range(count):
        port = BACKGROUND_FIRST_PORT + n
        source = "0.0.0.0/0" if n % 2 else f"198.51.100.{n % 250}/32"
        hop = _hop(
            f"{n:012x}",
            f"role=dnat family=4 proto=tcp in=eth0 ports={port} to={FW} toports={port} "
            f"srchost={source}",
        )
        assert isinstance(hop, DnatHop)
        hops.append(hop)
    return hops


def _compiled(hops: Sequence[Hop]) -> str:
    # The script starts from a flushed ruleset: none of our jumps exist yet.
    return compile_qube(QubeRules(hops=tuple(hops)), OwnedJumps()).script


def _linear(hops: Sequence[DnatHop]) -> str:
    dnat_rules = []
    accept_rules = []
    for hop in hops:
        ports = hop.ports.short
        # One source per forward here: an anonymous set per rule would load in quadratic time.
        [source] = hop.sources
        source_match = "" if source.prefixlen == 0 else f"ip saddr {source} "
        dnat_rules.append(
            f'    iifname "eth0" ip daddr {EDGE_LAN} {source_match}tcp dport {ports} '
            f"dnat ip to {hop.to}"
        )
        accept_rules.append(
            f'add rule ip qubes custom-forward iifname "eth0" {source_match}'
            f"ip daddr {hop.to} tcp dport {ports} ct state new accept"
        )
    return "\n".join(
        [
            "table ip portfwd-linear {",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat - 10; policy accept;",
            *dnat_rules,
            "  }",
            "}",
            *accept_rules,
            "",
        ]
    )


def _comparisons(own_vif_allowed: str | None) -> str:
    """Plain routing to work and the relays' listening ports: the other paths of the bench."""
    lines = [
        f"add rule ip qubes custom-forward ip daddr {WORK} tcp dport {SERVICE_PORTS} "
        "ct state new accept",
        f"add rule ip qubes custom-input tcp dport {RELAY_PORTS} ct state new accept",
    ]
    if own_vif_allowed is not None:
        # Routed replies from work reach net by fw's vif with work's address as source.
        lines.append(f'add element ip qubes allowed {{ "{own_vif_allowed}" . {WORK} }}')
    return "\n".join(lines) + "\n"


def edge_script(design: Design, forwards: int) -> str:
    """The edge's whole ruleset with `forwards` forwards (the measured one included)."""
    if forwards < 1:
        raise ValueError("forwards: expected at least 1 (the one under test)")
    hops = [*background_hops(forwards - 1), measured_hop(str(FW))]
    base = base_ruleset(BaseParams(provides_network=True, downstream=(Downstream(FW_VIF, FW),)))
    dnats = [h for h in hops if isinstance(h, DnatHop)]
    ours = _compiled(hops) if design == Design.MAP else _linear(dnats)
    return "flush ruleset\n" + base + ours + _comparisons(FW_VIF)


def firewall_script() -> str:
    """fw: one hop of the forward under test, toward work."""
    base = base_ruleset(BaseParams(provides_network=True, downstream=(Downstream(WORK_VIF, WORK),)))
    return "flush ruleset\n" + base + _compiled([measured_hop(str(WORK))]) + _comparisons(None)


def target_script() -> str:
    """work: accept the services' ports from anywhere (the forward's last hop)."""
    accept = _hop(
        MEASURED_ID, f"role=accept family=4 proto=tcp ports={SERVICE_PORTS} srchost=0.0.0.0/0"
    )
    base = base_ruleset(BaseParams(provides_network=False))
    return "flush ruleset\n" + base + _compiled([accept])
