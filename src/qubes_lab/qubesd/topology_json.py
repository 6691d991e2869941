"""The host's topology as JSON: what the service persists and what `--topology` seeds from."""

import ipaddress
from typing import Any

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import Qube, Topology, check_qube_name


def qube_to_json(qube: Qube) -> dict[str, Any]:
    return {
        "name": qube.name,
        "qid": qube.qid,
        "klass": qube.klass,
        "netvm": qube.netvm,
        "provides_network": qube.provides_network,
        "ip": None if qube.ip is None else str(qube.ip),
        "ip6": None if qube.ip6 is None else str(qube.ip6),
        "dispid": qube.dispid,
        "features": dict(qube.features),
    }


def topology_to_json(topology: Topology) -> list[dict[str, Any]]:
    return [qube_to_json(q) for q in sorted(topology.qubes.values(), key=lambda q: q.qid)]


def _int(field: str, untrusted_value: object, optional: bool = False) -> int | None:
    if untrusted_value is None and optional:
        return None
    if not isinstance(untrusted_value, int) or isinstance(untrusted_value, bool):
        raise ValidationError(field, "expected an integer")
    if not 0 <= untrusted_value <= 0xFFFF:
        raise ValidationError(field, "expected 0-65535")
    return untrusted_value


def qube_from_json(untrusted_value: object) -> Qube:
    if not isinstance(untrusted_value, dict):
        raise ValidationError("qube", "expected a JSON object")
    name = check_qube_name("name", str(untrusted_value.get("name", "")))
    untrusted_netvm = untrusted_value.get("netvm")
    netvm = None if untrusted_netvm is None else check_qube_name("netvm", str(untrusted_netvm))
    untrusted_features = untrusted_value.get("features") or {}
    if not isinstance(untrusted_features, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in untrusted_features.items()
    ):
        raise ValidationError("features", "expected an object of strings")
    try:
        ip = untrusted_value.get("ip")
        ip6 = untrusted_value.get("ip6")
        return Qube(
            name=name,
            qid=_int("qid", untrusted_value.get("qid")) or 0,
            klass=str(untrusted_value.get("klass") or "AppVM"),
            netvm=netvm,
            provides_network=bool(untrusted_value.get("provides_network", False)),
            ip=None if ip is None else ipaddress.IPv4Address(ip),
            ip6=None if ip6 is None else ipaddress.IPv6Address(ip6),
            dispid=_int("dispid", untrusted_value.get("dispid"), optional=True),
            features=untrusted_features,
        )
    except ipaddress.AddressValueError as err:
        raise ValidationError("ip", str(err)) from None


def topology_from_json(untrusted_value: object) -> Topology:
    if not isinstance(untrusted_value, list):
        raise ValidationError("topology", "expected a JSON list of qubes")
    return Topology.of(*(qube_from_json(q) for q in untrusted_value))
