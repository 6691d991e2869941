"""Qube properties the feature needs, in Qubes' `default=… type=… value` terms (pure).

A property is "default" until it is set explicitly; resetting returns it to the value the
host started with (the seed topology) or, for addresses, to the one derived from the qid.
"""

import ipaddress
from dataclasses import dataclass

from qubes_portfwd.controller.errors import (
    QubesNoSuchPropertyError,
    QubesPropertyValueError,
    QubesValueError,
)
from qubes_portfwd.model.hosts import is_qube_name
from qubes_portfwd.model.topology import Qube, Topology

ADMIN_VM = "dom0"
PROPERTY_NAMES = ("dispid", "gateway", "ip", "ip6", "name", "netvm", "provides_network", "qid")
ADMIN_VM_PROPERTIES = ("name", "qid")
WRITABLE = frozenset({"dispid", "ip", "ip6", "netvm", "provides_network"})
# A disposable's number (its 10.138.x.y address). Qubes assigns it when it creates the
# disposable; here setting it is how dom0 says a disposable was replaced by a new one.
DISPID_RANGE = (1, 65535)
TRUE_WORDS = ("True", "true", "1", "yes", "on")
FALSE_WORDS = ("False", "false", "0", "no", "off")


@dataclass(frozen=True)
class PropertyValue:
    is_default: bool
    type: str
    value: str

    def reply(self) -> str:
        return f"default={self.is_default} type={self.type} {self.value}"


def names_for(qube_name: str) -> tuple[str, ...]:
    return ADMIN_VM_PROPERTIES if qube_name == ADMIN_VM else PROPERTY_NAMES


def get(qube_name: str, topology: Topology, explicit: frozenset[str], prop: str) -> PropertyValue:
    """The value of `prop` of a qube (or dom0), as Qubes' property.Get shows it."""
    if prop not in names_for(qube_name):
        raise QubesNoSuchPropertyError(f"Invalid property {prop!r} of {qube_name}")
    if qube_name == ADMIN_VM:
        return (
            PropertyValue(True, "str", ADMIN_VM)
            if prop == "name"
            else PropertyValue(True, "int", "0")
        )
    qube = topology[qube_name]
    is_default = prop not in explicit
    if prop == "name":
        return PropertyValue(False, "str", qube.name)
    if prop == "qid":
        return PropertyValue(False, "int", str(qube.qid))
    if prop == "dispid":
        return PropertyValue(is_default, "int", "" if qube.dispid is None else str(qube.dispid))
    if prop == "netvm":
        return PropertyValue(is_default, "vm", qube.netvm or "")
    if prop == "provides_network":
        return PropertyValue(is_default, "bool", str(qube.provides_network))
    if prop == "ip":
        return PropertyValue(is_default, "str", str(qube.address4))
    if prop == "ip6":
        address6 = qube.address6
        return PropertyValue(is_default, "str", "" if address6 is None else str(address6))
    # gateway: the netvm's own address, as Qubes derives it
    netvm = topology.qubes.get(qube.netvm or "")
    return PropertyValue(True, "str", "" if netvm is None else str(netvm.address4))


def _check_writable(qube_name: str, prop: str) -> None:
    if prop not in names_for(qube_name):
        raise QubesNoSuchPropertyError(f"Invalid property {prop!r} of {qube_name}")
    if qube_name == ADMIN_VM or prop not in WRITABLE:
        writable = ", ".join(sorted(WRITABLE))
        raise QubesValueError(f"{prop}: read-only property; writable: {writable}")


def _netvm_loop(topology: Topology, start: str) -> bool:
    seen = set()
    current: str | None = start
    while current is not None and current in topology:
        if current in seen:
            return True
        seen.add(current)
        current = topology[current].netvm
    return False


def set_value(topology: Topology, qube_name: str, prop: str, untrusted_value: str) -> Topology:
    """The topology with `prop` of `qube_name` set; every refusal names the property."""
    _check_writable(qube_name, prop)
    qube = topology[qube_name]
    changed: Qube
    if prop == "netvm":
        changed = qube.with_changes(netvm=_check_netvm(topology, qube, untrusted_value))
    elif prop == "provides_network":
        if untrusted_value in TRUE_WORDS:
            changed = qube.with_changes(provides_network=True)
        elif untrusted_value in FALSE_WORDS:
            users = [q.name for q in topology.downstream(qube.name)]
            if users:
                raise QubesValueError(
                    f"provides_network: {', '.join(users)} still use {qube.name} as netvm"
                )
            changed = qube.with_changes(provides_network=False)
        else:
            raise QubesPropertyValueError("provides_network: expected True or False")
    elif prop == "dispid":
        changed = qube.with_changes(dispid=_check_dispid(qube, untrusted_value))
    elif prop == "ip":
        try:
            changed = qube.with_changes(ip=ipaddress.IPv4Address(untrusted_value))
        except ValueError:
            raise QubesPropertyValueError("ip: expected an IPv4 address") from None
    else:
        try:
            changed = qube.with_changes(ip6=ipaddress.IPv6Address(untrusted_value))
        except ValueError:
            raise QubesPropertyValueError("ip6: expected an IPv6 address") from None
    updated = topology.replace_qube(changed)
    if prop == "netvm" and _netvm_loop(updated, qube_name):
        raise QubesValueError("netvm: loops in network are unsupported")
    return updated


def _check_dispid(qube: Qube, untrusted_value: str) -> int:
    if qube.klass != "DispVM":
        raise QubesValueError(f"dispid: only a DispVM has one; {qube.name} is a {qube.klass}")
    low, high = DISPID_RANGE
    if not untrusted_value.isdigit() or not low <= int(untrusted_value) <= high:
        raise QubesPropertyValueError(f"dispid: expected an integer from {low} to {high}")
    return int(untrusted_value)


def _check_netvm(topology: Topology, qube: Qube, untrusted_value: str) -> str | None:
    if untrusted_value == "":
        return None
    if not is_qube_name(untrusted_value) or untrusted_value not in topology:
        raise QubesPropertyValueError("netvm: expected the name of an existing qube, or empty")
    if not topology[untrusted_value].provides_network:
        raise QubesValueError(f"netvm: {untrusted_value} does not provide network")
    if untrusted_value == qube.name:
        raise QubesValueError("netvm: a qube cannot be its own netvm")
    return untrusted_value


def reset(topology: Topology, seed: Topology, qube_name: str, prop: str) -> Topology:
    """Back to the default: the seed's value (netvm, provides_network) or the derived address."""
    _check_writable(qube_name, prop)
    qube = topology[qube_name]
    original = seed.qubes.get(qube_name, qube)
    if prop == "netvm":
        changed = qube.with_changes(netvm=original.netvm)
    elif prop == "provides_network":
        changed = qube.with_changes(provides_network=original.provides_network)
    elif prop == "dispid":
        changed = qube.with_changes(dispid=original.dispid)
    elif prop == "ip":
        changed = qube.with_changes(ip=original.ip)
    else:
        changed = qube.with_changes(ip6=original.ip6)
    return topology.replace_qube(changed)
