"""How qvm-portfwd shows forwards: a table, each forward's path hop by hop, and JSON."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ..model.countdown import countdown_text
from ..model.forward_status import (
    ForwardState,
    ForwardStatus,
    HopStatus,
    parsed_rule,
    to_json_value,
)
from ..model.rule import ExpireAt, Expiry, ForwardRule, ForwardType
from .firewall_table import port_mapping
from .table import format_table

HEADER = ("ID", "TARGET", "TYPE", "IP", "PROTO", "PORTS", "SOURCES", "EXPIRES", "STATE")
UNKNOWN = "?"
NO_PATH = "(no path)"
ARROW = " → "


@dataclass(frozen=True)
class ForwardLine:
    """A forward's row in the table and the indented lines drawn under it."""

    cells: tuple[str, ...]
    details: tuple[str, ...]


def expiry_text(expire: Expiry | None, now: float) -> str:
    if expire is None:
        return "never"
    if isinstance(expire, ExpireAt):
        return countdown_text(expire.timestamp - now)
    return "reboot"


def public_text(status: ForwardStatus) -> str:
    """`203.0.113.2:40001`, or with protocols and ports when a forward has several."""
    if len(status.public) == 1:
        return status.public[0].text
    return ",".join(f"{p.text}/{p.proto}→{p.port}" for p in status.public)


def origin(status: ForwardStatus, rule: ForwardRule | None, tunnel_edges: Collection[str]) -> str:
    """Where connections come from: the named qubes, the LAN, or a tunnel's far side."""
    if rule is not None and rule.forwardtype == ForwardType.INTERNAL:
        return ",".join(rule.source_qubes)
    edge = status.hops[0].qube if status.hops else None
    if status.public:
        return f"VPN {public_text(status)}"
    return "VPN" if edge in tunnel_edges else "LAN"


def hop_label(hop: HopStatus, rule: ForwardRule | None) -> str:
    name = hop.qube
    if hop.role == "target" and rule is not None:
        name = f"{hop.qube}:{rule.dstports.short}"
    return f"{name}[{hop.state}]"


def path_text(
    status: ForwardStatus, rule: ForwardRule | None, tunnel_edges: Collection[str] = ()
) -> str:
    """`LAN → sys-net[applied] → sys-firewall[applied] → work:8080[applied]`."""
    if not status.hops:
        return NO_PATH
    labels = [origin(status, rule, tunnel_edges), *(hop_label(h, rule) for h in status.hops)]
    return ARROW.join(labels)


def forward_line(
    status: ForwardStatus, now: float, tunnel_edges: Collection[str] = ()
) -> ForwardLine:
    rule = parsed_rule(status)
    if rule is None:
        kind = protos = ports = sources = expires = UNKNOWN
    else:
        kind = str(rule.forwardtype)
        protos = ",".join(rule.protos)
        ports = port_mapping(rule)
        sources = ",".join(str(s) for s in rule.srchost)
        expires = expiry_text(rule.expire, now)
    cells = (
        status.id,
        status.target,
        kind,
        str(status.family),
        protos,
        ports,
        sources,
        expires,
        str(status.state),
    )
    details = [f"path: {path_text(status, rule, tunnel_edges)}"]
    if status.state != ForwardState.ACTIVE and status.reason:
        details.append(f"{status.state}: {status.reason}")
    details += [f"{hop.qube}: {hop.error}" for hop in status.hops if hop.error]
    if rule is not None and rule.comment:
        details.append(f"comment: {rule.comment}")
    return ForwardLine(cells, tuple(details))


def forward_json(status: ForwardStatus, now: float) -> dict[str, Any]:
    """F's status object plus the rule's fields spelled out, for scripts."""
    value = to_json_value(status)
    rule = parsed_rule(status)
    if rule is None:
        return value
    expire = rule.expire
    value.update(
        {
            "type": str(rule.forwardtype),
            "protos": list(rule.protos),
            "outside_ports": rule.srcports.short,
            "qube_ports": rule.dstports.short,
            "sources": [str(s) for s in rule.srchost],
            "expire": None if expire is None else expire.text,
            "expires_in": (int(expire.timestamp - now) if isinstance(expire, ExpireAt) else None),
            "comment": rule.comment,
        }
    )
    return value


def concerns(status: ForwardStatus, qube: str) -> bool:
    """A qube's view: forwards to it and forwards passing through it."""
    return status.target == qube or qube in status.path


def table_lines(lines: Sequence[ForwardLine]) -> list[str]:
    """The aligned table with each forward's details indented under its row."""
    rendered = format_table([HEADER, *(line.cells for line in lines)])
    output = [rendered[0]]
    for row, line in zip(rendered[1:], lines, strict=True):
        output.append(row)
        output += [f"    {detail}" for detail in line.details]
    return output
