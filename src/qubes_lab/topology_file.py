"""The lab's topology file (TOML): the qubes as the model sees them, plus the outside world."""

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import (
    DEFAULT_UPLINK,
    PathError,
    Qube,
    Topology,
    check_qube_name,
)

DEFAULT_TOPOLOGY = "default.toml"
QUBE_CLASSES = ("AppVM", "DispVM", "StandaloneVM", "TemplateVM")
_QUBE_KEYS = frozenset(
    {"qid", "class", "netvm", "provides_network", "ip", "ip6", "dispid", "features"}
)
_OUTSIDE_KEYS = frozenset(
    {"lan4", "lan6", "internet4", "internet6", "provider4", "tunnel4", "domain"}
)
LAN, SERVER, PROVIDER = "lan", "server", "provider"
# The outside hosts share the lab's namespace naming, so no qube may take their names.
OUTSIDE_HOSTS = (LAN, SERVER, PROVIDER)
# Interface names the lab itself gives every qube: a tunnel may not take them.
_RESERVED_IFNAMES = frozenset({"lo", DEFAULT_UPLINK})


@dataclass(frozen=True)
class OutsideSpec:
    """Address ranges of the world outside the Qubes host (documentation ranges by default)."""

    lan4: ipaddress.IPv4Network
    lan6: ipaddress.IPv6Network
    internet4: ipaddress.IPv4Network
    internet6: ipaddress.IPv6Network
    provider4: ipaddress.IPv4Network
    tunnel4: ipaddress.IPv4Network
    domain: str


DEFAULT_OUTSIDE = OutsideSpec(
    lan4=ipaddress.IPv4Network("192.0.2.0/24"),
    lan6=ipaddress.IPv6Network("2001:db8:0:1::/64"),
    internet4=ipaddress.IPv4Network("198.51.100.0/24"),
    internet6=ipaddress.IPv6Network("2001:db8:0:2::/64"),
    provider4=ipaddress.IPv4Network("203.0.113.0/24"),
    tunnel4=ipaddress.IPv4Network("100.64.0.0/24"),
    domain="lab.test",
)


@dataclass(frozen=True)
class LabSpec:
    """Everything `up` builds: the qubes, the edge on the LAN, the tunnel qubes, the outside."""

    topology: Topology
    outside: OutsideSpec

    @property
    def edge(self) -> Qube:
        """The one netvm-less network qube: its physical interface is on the LAN."""
        return next(q for q in self.qubes_by_qid() if q.provides_network and q.netvm is None)

    @property
    def tunnel_qubes(self) -> tuple[Qube, ...]:
        return tuple(q for q in self.qubes_by_qid() if q.is_tunnel)

    def qubes_by_qid(self) -> tuple[Qube, ...]:
        return tuple(sorted(self.topology.qubes.values(), key=lambda q: q.qid))


def _require_table(field: str, untrusted_value: object) -> Mapping[str, Any]:
    if not isinstance(untrusted_value, dict):
        raise ValidationError(field, "expected a table")
    return untrusted_value


def _reject_unknown(field: str, untrusted_table: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(untrusted_table) - known)
    if unknown:
        raise ValidationError(
            f"{field}.{unknown[0]}", f"unknown key; allowed keys are {', '.join(sorted(known))}"
        )


def _parse_int(field: str, untrusted_value: object, low: int, high: int) -> int:
    if isinstance(untrusted_value, bool) or not isinstance(untrusted_value, int):
        raise ValidationError(field, f"expected an integer from {low} to {high}")
    if not low <= untrusted_value <= high:
        raise ValidationError(field, f"{untrusted_value} is out of range; expected {low}-{high}")
    return untrusted_value


def _parse_str(field: str, untrusted_value: object) -> str:
    if not isinstance(untrusted_value, str):
        raise ValidationError(field, "expected a string")
    return untrusted_value


def _parse_network(field: str, untrusted_value: object, version: int, max_prefix: int) -> str:
    """Validate a network's text form; the caller builds the typed value from it."""
    text = _parse_str(field, untrusted_value)
    form = f"an IPv{version} network like {'192.0.2.0/24' if version == 4 else '2001:db8::/64'}"
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise ValidationError(field, f"{text!r} is not {form} (no host bits)") from None
    if network.version != version or network.prefixlen > max_prefix:
        raise ValidationError(field, f"{text!r}: expected {form}, prefix at most /{max_prefix}")
    return text


def _net4(
    table: Mapping[str, Any], key: str, default: ipaddress.IPv4Network, max_prefix: int
) -> ipaddress.IPv4Network:
    text = _parse_network(f"outside.{key}", table.get(key, str(default)), 4, max_prefix)
    return ipaddress.IPv4Network(text)


def _net6(
    table: Mapping[str, Any], key: str, default: ipaddress.IPv6Network, max_prefix: int
) -> ipaddress.IPv6Network:
    text = _parse_network(f"outside.{key}", table.get(key, str(default)), 6, max_prefix)
    return ipaddress.IPv6Network(text)


def _parse_features(field: str, untrusted_value: object) -> dict[str, str]:
    table = _require_table(field, untrusted_value)
    features: dict[str, str] = {}
    for untrusted_key, untrusted_feature in table.items():
        if isinstance(untrusted_feature, bool):
            untrusted_feature = "1" if untrusted_feature else ""
        features[untrusted_key] = _parse_str(f"{field}.{untrusted_key}", untrusted_feature)
    return features


def _parse_qube(name: str, untrusted_table: object) -> Qube:
    field = f"qubes.{name}"
    table = _require_table(field, untrusted_table)
    _reject_unknown(field, table, _QUBE_KEYS)
    if "qid" not in table:
        raise ValidationError(f"{field}.qid", "required; expected an integer from 1 to 254")
    # Qubes' qids go to 254 in 10.137.0.0/24 terms only when addresses stay in one /24.
    qid = _parse_int(f"{field}.qid", table["qid"], 1, 254)
    klass = _parse_str(f"{field}.class", table.get("class", "AppVM"))
    if klass not in QUBE_CLASSES:
        raise ValidationError(f"{field}.class", f"expected one of {', '.join(QUBE_CLASSES)}")
    netvm = table.get("netvm")
    if netvm is not None:
        netvm = check_qube_name(f"{field}.netvm", _parse_str(f"{field}.netvm", netvm))
    provides_network = table.get("provides_network", False)
    if not isinstance(provides_network, bool):
        raise ValidationError(f"{field}.provides_network", "expected true or false")
    ip = ip6 = None
    if "ip" in table:
        try:
            ip = ipaddress.IPv4Address(_parse_str(f"{field}.ip", table["ip"]))
        except ValueError:
            raise ValidationError(f"{field}.ip", "expected an IPv4 address") from None
    if "ip6" in table:
        try:
            ip6 = ipaddress.IPv6Address(_parse_str(f"{field}.ip6", table["ip6"]))
        except ValueError:
            raise ValidationError(f"{field}.ip6", "expected an IPv6 address") from None
    dispid = None
    if "dispid" in table:
        dispid = _parse_int(f"{field}.dispid", table["dispid"], 1, 65535)
    features = _parse_features(f"{field}.features", table.get("features", {}))
    return Qube(
        name=name,
        qid=qid,
        klass=klass,
        netvm=netvm,
        provides_network=provides_network,
        ip=ip,
        ip6=ip6,
        dispid=dispid,
        features=features,
    )


def _parse_outside(untrusted_value: object) -> OutsideSpec:
    table = _require_table("outside", untrusted_value)
    _reject_unknown("outside", table, _OUTSIDE_KEYS)
    d = DEFAULT_OUTSIDE
    domain = _parse_str("outside.domain", table.get("domain", d.domain))
    labels = domain.split(".")
    if not all(label and label.isascii() and label.replace("-", "").isalnum() for label in labels):
        raise ValidationError("outside.domain", f"{domain!r}: expected a DNS name like lab.test")
    return OutsideSpec(
        lan4=_net4(table, "lan4", d.lan4, 24),
        lan6=_net6(table, "lan6", d.lan6, 120),
        internet4=_net4(table, "internet4", d.internet4, 24),
        internet6=_net6(table, "internet6", d.internet6, 120),
        provider4=_net4(table, "provider4", d.provider4, 30),
        tunnel4=_net4(table, "tunnel4", d.tunnel4, 24),
        domain=domain.lower(),
    )


def _check_layout(topology: Topology) -> None:
    """Reject what the lab cannot wire: it names the qube and the field at fault."""
    edges = [q.name for q in topology.qubes.values() if q.provides_network and q.netvm is None]
    if len(edges) != 1:
        raise ValidationError(
            "qubes",
            f"expected exactly one network qube without netvm (the edge on the LAN), got {edges}",
        )
    clash = next((name for name in OUTSIDE_HOSTS if name in topology), None)
    if clash is not None:
        raise ValidationError(
            f"qubes.{clash}", f"reserved for the outside world ({', '.join(OUTSIDE_HOSTS)})"
        )
    seen4: dict[ipaddress.IPv4Address, str] = {}
    for qube in topology.qubes.values():
        field = f"qubes.{qube.name}"
        if qube.address4 in seen4:
            raise ValidationError(
                f"{field}.qid", f"address {qube.address4} already used by {seen4[qube.address4]}"
            )
        seen4[qube.address4] = qube.name
        if qube.netvm is not None:
            try:
                topology.path(qube.name)
            except PathError as error:
                raise ValidationError(f"{field}.netvm", str(error)) from None
        if qube.is_tunnel:
            if not qube.provides_network or qube.netvm is None:
                raise ValidationError(
                    f"{field}.features.portfwd-tunnel",
                    "a tunnel qube must provide network and have a netvm",
                )
            if qube.uplink in _RESERVED_IFNAMES or not _is_ifname(qube.uplink):
                raise ValidationError(
                    f"{field}.features.portfwd-uplink",
                    "a tunnel qube needs its tunnel interface here, e.g. wg0 (not eth0)",
                )


def _is_ifname(name: str) -> bool:
    if name in (".", ".."):
        return False
    return 0 < len(name) < 16 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)


def parse_lab_spec(untrusted_document: Mapping[str, Any]) -> LabSpec:
    """A parsed TOML document to a validated LabSpec (ValidationError names the field)."""
    _reject_unknown("", untrusted_document, frozenset({"outside", "qubes"}))
    outside = _parse_outside(untrusted_document.get("outside", {}))
    untrusted_qubes = _require_table("qubes", untrusted_document.get("qubes"))
    if not untrusted_qubes:
        raise ValidationError("qubes", "expected at least one [qubes.NAME] table")
    qubes = [
        _parse_qube(check_qube_name("qubes", untrusted_name), untrusted_table)
        for untrusted_name, untrusted_table in untrusted_qubes.items()
    ]
    owners: dict[int, str] = {}
    for qube in qubes:
        if qube.qid in owners:
            raise ValidationError(
                f"qubes.{qube.name}.qid", f"each qube needs its own qid; {owners[qube.qid]} has it"
            )
        owners[qube.qid] = qube.name
    topology = Topology.of(*qubes)
    _check_layout(topology)
    return LabSpec(topology=topology, outside=outside)


def load_lab_spec_text(untrusted_text: str, origin: str = "topology") -> LabSpec:
    try:
        untrusted_document = tomllib.loads(untrusted_text)
    except tomllib.TOMLDecodeError as error:
        raise ValidationError(origin, f"not valid TOML: {error}") from None
    return parse_lab_spec(untrusted_document)


def default_topology_text() -> str:
    return resources.files(__package__).joinpath(DEFAULT_TOPOLOGY).read_text(encoding="utf-8")


def load_lab_spec(path: Path | None = None) -> LabSpec:
    """The lab spec from `path`, or the built-in default topology."""
    if path is None:
        return load_lab_spec_text(default_topology_text(), DEFAULT_TOPOLOGY)
    return load_lab_spec_text(path.read_text(encoding="utf-8"), str(path))
