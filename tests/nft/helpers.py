"""Builders of entries for the nft tests (through the model's own parsers)."""

from qubes_lab.qubes_firewall.entries import FirewallEntry, parse_firewall
from qubes_lab.qubes_firewall.nft import firewall_script
from qubes_portfwd.model.entries import AcceptHop, DnatHop, parse_hop


def dnat(
    forward_id: str,
    *,
    ports: str = "80-80",
    toports: str | None = None,
    to: str = "10.137.0.5",
    inbound: str = "eth0",
    proto: str = "tcp",
    srchost: str = "0.0.0.0/0",
    family: int = 4,
) -> DnatHop:
    value = (
        f"role=dnat family={family} proto={proto} in={inbound} ports={ports} to={to} "
        f"toports={toports or ports} srchost={srchost}"
    )
    hop = parse_hop(f"/qubes-portfwd/{forward_id}/{family}", value)
    assert isinstance(hop, DnatHop)
    return hop


def accept(
    forward_id: str,
    *,
    ports: str = "8080-8080",
    proto: str = "tcp",
    srchost: str = "0.0.0.0/0",
    family: int = 4,
) -> AcceptHop:
    value = f"role=accept family={family} proto={proto} ports={ports} srchost={srchost}"
    hop = parse_hop(f"/qubes-portfwd/{forward_id}/{family}", value)
    assert isinstance(hop, AcceptHop)
    return hop


def firewall(address: str, policy: str, *rules: str) -> FirewallEntry:
    values = {"policy": policy} | {f"{n:04}": rule for n, rule in enumerate(rules)}
    return parse_firewall(address, values)


def worker_tables(*entries: FirewallEntry) -> str:
    """The `qubes-firewall` tables Qubes' worker (the lab's emulation) builds from `entries`."""
    script, blocked = firewall_script(entries, [], {}, [])
    assert not blocked, blocked
    return script


def many_forwards(count: int) -> tuple[DnatHop, ...]:
    """`count` distinct forwards: varied sources, remaps, protocols and targets."""
    hops = []
    for n in range(count):
        port = 1024 + n
        hops.append(
            dnat(
                f"{n:012x}",
                ports=f"{port}-{port}",
                toports=f"{port + 20000}-{port + 20000}" if n % 3 == 0 else None,
                to=f"10.137.{n % 7}.{5 + n % 200}",
                proto=("tcp", "udp", "tcp,udp")[n % 3],
                srchost="0.0.0.0/0" if n % 2 else f"192.0.2.{n % 250}/32,198.51.100.0/24",
            )
        )
    return tuple(hops)
