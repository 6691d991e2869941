"""admin.vm.feature.*: qube features (`ipv6`, `portfwd-tunnel`, `portfwd-uplink`, any other)."""

import re

from ...model.errors import ValidationError
from ...model.firewall_revision import FEATURE_PREFIX as GUARD_PREFIX
from ...model.firewall_revision import BaseRevision
from ...model.topology import FEATURE_UPLINK, Topology
from ..errors import QubesFeatureNotFoundError, QubesValueError
from ..firewall_guard import stale_guards
from ..service import Service
from ..wire import Request
from . import method

MAX_VALUE = 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _check_name(untrusted_name: str) -> str:
    if not _NAME_RE.match(untrusted_name):
        raise QubesValueError("feature name: letters, digits and -_. only, at most 64")
    return untrusted_name


def _check_value(name: str, untrusted_payload: bytes) -> str:
    try:
        untrusted_value = untrusted_payload.decode("ascii")
    except UnicodeDecodeError:
        raise QubesValueError(f"{name}: the value must be printable ASCII") from None
    if len(untrusted_value) > MAX_VALUE or not untrusted_value.isprintable():
        raise QubesValueError(f"{name}: the value must be printable ASCII, at most {MAX_VALUE}")
    if name == FEATURE_UPLINK and untrusted_value and not _IFACE_RE.match(untrusted_value):
        raise QubesValueError(f"{name}: expected an interface name (letters, digits, -_.)")
    if name.startswith(GUARD_PREFIX):
        try:
            BaseRevision.parse(untrusted_value)
        except ValidationError as err:
            raise QubesValueError(str(err)) from None
    return untrusted_value


@method("admin.vm.feature.List")
async def feature_list(service: Service, request: Request) -> bytes:
    features = service.topology[request.dest].features
    return "".join(f"{name}\n" for name in sorted(features)).encode("ascii")


@method("admin.vm.feature.Get", arg=True)
async def feature_get(service: Service, request: Request) -> bytes:
    features = service.topology[request.dest].features
    if request.arg not in features:
        raise QubesFeatureNotFoundError(f"Feature not set: {_check_name(request.arg)}")
    return features[request.arg].encode("ascii")


@method("admin.vm.feature.Set", arg=True, payload=None)
async def feature_set(service: Service, request: Request) -> bytes:
    name = _check_name(request.arg)
    value = _check_value(name, request.untrusted_payload)
    qube = request.dest

    guard = name.startswith(GUARD_PREFIX)

    def change(topology: Topology, explicit: dict[str, frozenset[str]]) -> Topology:
        features = {**topology[qube].features, name: value}
        if guard:  # a guarded writer's word on what it read: old ones of dead writers go
            for stale in stale_guards(features, service.clock()):
                del features[stale]
        return topology.replace_qube(topology[qube].with_changes(features=features))

    # A guard changes no forward: re-planning the host for it would only slow writers down.
    await service.change_topology(change, publish=not guard)
    return b""


@method("admin.vm.feature.Remove", arg=True)
async def feature_remove(service: Service, request: Request) -> bytes:
    name = _check_name(request.arg)
    qube = request.dest

    def change(topology: Topology, explicit: dict[str, frozenset[str]]) -> Topology:
        if name not in topology[qube].features:
            raise QubesFeatureNotFoundError(f"Feature not set: {name}")
        features = {k: v for k, v in topology[qube].features.items() if k != name}
        return topology.replace_qube(topology[qube].with_changes(features=features))

    await service.change_topology(change, publish=not name.startswith(GUARD_PREFIX))
    return b""
