"""admin.vm.feature.*: qube features (`ipv6`, `portfwd-tunnel`, `portfwd-uplink`, any other).

A `portfwd.<id>` feature is a forward of that qube (model/forward_feature.py): checked before
it is stored as our dom0 extension checks it in `domain-feature-pre-set` on a stock host
(refused with the field and the allowed form, never rewritten), stored under the service's
lock with the conflict check, and re-planned; removing it re-plans too. A qube's NAT policy
`portfwd-nat-policy` is checked whole the same way before it is stored (it changes no plan).
"""

import re

from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.controller.errors import QubesFeatureNotFoundError, QubesValueError
from qubes_portfwd.controller.firewall_guard import stale_guards
from qubes_portfwd.controller.forward_binding import check_forward_feature
from qubes_portfwd.controller.nat_policy import (
    FEATURE_POLICY,
    MAX_FEATURE_VALUE,
    parse_policy_feature,
)
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.firewall_revision import FEATURE_PREFIX as GUARD_PREFIX
from qubes_portfwd.model.firewall_revision import BaseRevision
from qubes_portfwd.model.forward_feature import forward_id_of, is_forward_feature
from qubes_portfwd.model.rule import ForwardRule, Rule, forward_id
from qubes_portfwd.model.rule_text import MAX_RULE_LENGTH
from qubes_portfwd.model.topology import FEATURE_UPLINK, Topology

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
    limit = MAX_RULE_LENGTH if is_forward_feature(name) else MAX_VALUE
    if name == FEATURE_POLICY:
        limit = MAX_FEATURE_VALUE
    try:
        untrusted_value = untrusted_payload.decode("ascii")
    except UnicodeDecodeError:
        raise QubesValueError(
            f"{name}: the value must be printable ASCII (qubesd takes no other feature value)"
        ) from None
    if len(untrusted_value) > limit or not untrusted_value.isprintable():
        raise QubesValueError(
            f"{name}: the value must be printable ASCII (no newline: one line), at most {limit}"
        )
    if name == FEATURE_UPLINK and untrusted_value and not _IFACE_RE.match(untrusted_value):
        raise QubesValueError(f"{name}: expected an interface name (letters, digits, -_.)")
    try:
        if name.startswith(GUARD_PREFIX):
            BaseRevision.parse(untrusted_value)
        elif name == FEATURE_POLICY:
            parse_policy_feature(untrusted_value)
    except ValidationError as err:
        raise QubesValueError(str(err)) from None
    return untrusted_value


def _forward_feature_id(name: str) -> str:
    try:
        return forward_id_of(name)
    except ValidationError as err:
        raise QubesValueError(f"{name}: {err.field}: {err.message}") from None


def _is_forward(qube: str, rule: Rule, wanted: str) -> bool:
    return isinstance(rule, ForwardRule) and forward_id(qube, rule) == wanted


@method("admin.vm.feature.List")
async def feature_list(service: Controller, request: Request) -> bytes:
    features = service.topology[request.dest].features
    return "".join(f"{name}\n" for name in sorted(features)).encode("ascii")


@method("admin.vm.feature.Get", arg=True)
async def feature_get(service: Controller, request: Request) -> bytes:
    features = service.topology[request.dest].features
    if request.arg not in features:
        raise QubesFeatureNotFoundError(f"Feature not set: {_check_name(request.arg)}")
    return features[request.arg].encode("ascii")


async def _set_forward(service: Controller, qube: str, name: str, untrusted_value: str) -> None:
    """Store one forward under its own key: no list is read, changed and written back."""
    wanted = _forward_feature_id(name)

    def change(current: tuple[Rule, ...], service: Controller) -> list[Rule]:
        stored = next((r for r in current if _is_forward(qube, r, wanted)), None)
        assert stored is None or isinstance(stored, ForwardRule)
        try:
            rule = check_forward_feature(
                wanted,
                untrusted_value,
                qube,
                service.topology,
                service.boot_id(),
                service.clock(),
                stored,
            )
        except ValidationError as err:
            raise QubesValueError(f"{name}: {err}") from None
        if stored is None:
            return [*current, rule]
        return [rule if _is_forward(qube, r, wanted) else r for r in current]

    await service.change_rules(qube, change, skip_unchanged=True)


@method("admin.vm.feature.Set", arg=True, payload=None)
async def feature_set(service: Controller, request: Request) -> bytes:
    name = _check_name(request.arg)
    value = _check_value(name, request.untrusted_payload)
    qube = request.dest
    if is_forward_feature(name):
        await _set_forward(service, qube, name, value)
        return b""

    guard = name.startswith(GUARD_PREFIX)
    # Neither a guard nor a NAT policy changes a forward: re-planning the host for them
    # would only slow writers down.
    replan = not guard and name != FEATURE_POLICY

    def change(topology: Topology, explicit: dict[str, frozenset[str]]) -> Topology:
        features = {**topology[qube].features, name: value}
        if guard:  # a guarded writer's word on what it read: old ones of dead writers go
            for stale in stale_guards(features, service.clock()):
                del features[stale]
        return topology.replace_qube(topology[qube].with_changes(features=features))

    await service.change_topology(change, publish=replan)
    return b""


@method("admin.vm.feature.Remove", arg=True)
async def feature_remove(service: Controller, request: Request) -> bytes:
    name = _check_name(request.arg)
    qube = request.dest
    if is_forward_feature(name):

        def drop(current: tuple[Rule, ...], service: Controller) -> list[Rule]:
            if name not in service.topology[qube].features:
                raise QubesFeatureNotFoundError(f"Feature not set: {name}")
            wanted = _forward_feature_id(name)
            return [r for r in current if not _is_forward(qube, r, wanted)]

        await service.change_rules(qube, drop)
        return b""

    def change(topology: Topology, explicit: dict[str, frozenset[str]]) -> Topology:
        if name not in topology[qube].features:
            raise QubesFeatureNotFoundError(f"Feature not set: {name}")
        features = {k: v for k, v in topology[qube].features.items() if k != name}
        return topology.replace_qube(topology[qube].with_changes(features=features))

    replan = not name.startswith(GUARD_PREFIX) and name != FEATURE_POLICY
    await service.change_topology(change, publish=replan)
    return b""
