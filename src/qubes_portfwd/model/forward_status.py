"""The live status of forwards and their hops, as the admin service reports it (JSON both ways).

The service builds these from the plan and the agents' reports; the client and the front ends
read them back. Parsing treats the JSON as untrusted and checks every field.
"""

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from .errors import ValidationError
from .hosts import is_qube_name
from .rule import ForwardRule
from .rule_text import parse_rule

MAX_TEXT = 4096
# A tunnel qube's lease keeper reports `PUBLIC_PREFIX<id>/<proto>/<port>` = `ADDR:PORT`.
PUBLIC_PREFIX = "/qubes-portfwd-public/"
PUBLIC_PROTOS = ("tcp", "udp")


class ForwardState(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    CONFLICT = "conflict"
    FAILED = "failed"


class HopState(StrEnum):
    APPLIED = "applied"
    PENDING = "pending"
    FAILED = "failed"
    INACTIVE = "inactive"


HOP_ROLES = ("edge", "middle", "netvm", "target")
# An agent's report for an entry whose rules it found lost from its kernel (a reload of
# Qubes' base rules, a flushed chain) while it puts them back: not in force, not failed.
REPAIRING = "repairing"
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class HopStatus:
    """One qube of a forward's path: its role there and what its agent made of the entry."""

    qube: str
    role: str
    state: HopState
    error: str | None = None


@dataclass(frozen=True)
class PublicEndpoint:
    """Where a VPN provider exposes one port of a forward: `address:public_port` → `port`."""

    proto: str
    port: int
    address: ipaddress.IPv4Address
    public_port: int

    @property
    def text(self) -> str:
        return f"{self.address}:{self.public_port}"


def public_key(forward_id: str, proto: str, port: int) -> str:
    return f"{PUBLIC_PREFIX}{forward_id}/{proto}/{port}"


def _port(field: str, untrusted_value: object) -> int:
    if isinstance(untrusted_value, str):
        if (
            not (untrusted_value.isascii() and untrusted_value.isdigit())
            or len(untrusted_value) > 5
        ):
            raise ValidationError(field, "expected a port 1-65535")
        untrusted_value = int(untrusted_value)
    if isinstance(untrusted_value, bool) or not isinstance(untrusted_value, int):
        raise ValidationError(field, "expected a port 1-65535")
    if not 1 <= untrusted_value <= 65535:
        raise ValidationError(field, "expected a port 1-65535")
    return untrusted_value


def _proto(field: str, untrusted_value: object) -> str:
    if untrusted_value not in PUBLIC_PROTOS:
        raise ValidationError(field, "expected tcp or udp")
    return str(untrusted_value)


def _address4(field: str, untrusted_value: object) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(untrusted_value))
    except ValueError:
        raise ValidationError(field, "expected an IPv4 address (a.b.c.d)") from None


def parse_public_entry(untrusted_key: str, untrusted_value: str) -> tuple[str, PublicEndpoint]:
    """(forward id, endpoint) from a keeper's `PUBLIC_PREFIX<id>/<proto>/<port>` = `A:P`."""
    untrusted_parts = untrusted_key.removeprefix(PUBLIC_PREFIX).split("/")
    if not untrusted_key.startswith(PUBLIC_PREFIX) or len(untrusted_parts) != 3:
        raise ValidationError("key", f"expected {PUBLIC_PREFIX}<id>/<proto>/<port>")
    forward_id = _forward_id(untrusted_parts[0])
    address, colon, untrusted_public_port = untrusted_value.rpartition(":")
    if not colon:
        raise ValidationError("public", "expected ADDRESS:PORT")
    endpoint = PublicEndpoint(
        proto=_proto("public.proto", untrusted_parts[1]),
        port=_port("public.port", untrusted_parts[2]),
        address=_address4("public.address", address),
        public_port=_port("public.public_port", untrusted_public_port),
    )
    return forward_id, endpoint


@dataclass(frozen=True)
class ForwardStatus:
    """One forward in one IP family: the rule, the planner's verdict and each hop outer → inner.

    `rule` is the Admin API text of the rule (as `admin.vm.firewall.Get` shows it).
    """

    id: str
    target: str
    rule: str
    family: int
    state: ForwardState
    reason: str | None
    hops: tuple[HopStatus, ...]
    public: tuple[PublicEndpoint, ...] = ()  # set for forwards a VPN provider exposes

    @property
    def forward_id(self) -> str:
        return self.id

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(hop.qube for hop in self.hops)

    @property
    def network_qubes(self) -> tuple[str, ...]:
        return tuple(hop.qube for hop in self.hops if hop.role != "target")


def to_json_value(status: ForwardStatus) -> dict[str, Any]:
    return {
        "id": status.id,
        "target": status.target,
        "rule": status.rule,
        "family": status.family,
        "state": str(status.state),
        "reason": status.reason,
        "hops": [
            {"qube": h.qube, "role": h.role, "state": str(h.state), "error": h.error}
            for h in status.hops
        ],
        "public": [
            {
                "proto": p.proto,
                "port": p.port,
                "address": str(p.address),
                "public_port": p.public_port,
            }
            for p in status.public
        ],
    }


def dumps(statuses: Sequence[ForwardStatus]) -> bytes:
    """The payload of the forward-listing methods: a JSON list, one object per forward."""
    return json.dumps([to_json_value(s) for s in statuses], sort_keys=True).encode()


def _text(field: str, untrusted_value: object, *, optional: bool = False) -> str | None:
    if untrusted_value is None and optional:
        return None
    if not isinstance(untrusted_value, str) or len(untrusted_value) > MAX_TEXT:
        raise ValidationError(field, f"expected a string of at most {MAX_TEXT} characters")
    return untrusted_value


def _qube(field: str, untrusted_value: object) -> str:
    if not isinstance(untrusted_value, str) or not is_qube_name(untrusted_value):
        raise ValidationError(field, "expected a qube name")
    return untrusted_value


def _enum(field: str, enum: type[E], untrusted_value: object) -> E:
    allowed = [str(member) for member in enum]
    if untrusted_value not in allowed:
        raise ValidationError(field, f"expected one of {', '.join(allowed)}")
    return enum(untrusted_value)


def _hop(untrusted_hop: object) -> HopStatus:
    if not isinstance(untrusted_hop, dict):
        raise ValidationError("hops", "expected a list of objects")
    role = untrusted_hop.get("role")
    if role not in HOP_ROLES:
        raise ValidationError("hops.role", f"expected one of {', '.join(HOP_ROLES)}")
    return HopStatus(
        qube=_qube("hops.qube", untrusted_hop.get("qube")),
        role=role,
        state=_enum("hops.state", HopState, untrusted_hop.get("state")),
        error=_text("hops.error", untrusted_hop.get("error"), optional=True),
    )


def _forward_id(untrusted_value: object) -> str:
    if not (
        isinstance(untrusted_value, str)
        and len(untrusted_value) == 12
        and all(c in "0123456789abcdef" for c in untrusted_value)
    ):
        raise ValidationError("id", "expected 12 lowercase hex digits")
    return untrusted_value


def _public(untrusted_public: object) -> PublicEndpoint:
    if not isinstance(untrusted_public, dict):
        raise ValidationError("public", "expected a list of objects")
    return PublicEndpoint(
        proto=_proto("public.proto", untrusted_public.get("proto")),
        port=_port("public.port", untrusted_public.get("port")),
        address=_address4("public.address", untrusted_public.get("address")),
        public_port=_port("public.public_port", untrusted_public.get("public_port")),
    )


def from_json_value(untrusted_value: object) -> ForwardStatus:
    if not isinstance(untrusted_value, dict):
        raise ValidationError("forward", "expected a JSON object")
    forward_id = _forward_id(untrusted_value.get("id"))
    family = untrusted_value.get("family")
    if family not in (4, 6) or isinstance(family, bool):
        raise ValidationError("family", "expected 4 or 6")
    untrusted_hops = untrusted_value.get("hops")
    if not isinstance(untrusted_hops, list):
        raise ValidationError("hops", "expected a list of objects")
    untrusted_publics = untrusted_value.get("public", [])  # absent from older services
    if not isinstance(untrusted_publics, list):
        raise ValidationError("public", "expected a list of objects")
    return ForwardStatus(
        id=forward_id,
        target=_qube("target", untrusted_value.get("target")),
        rule=_text("rule", untrusted_value.get("rule")) or "",
        family=family,
        state=_enum("state", ForwardState, untrusted_value.get("state")),
        reason=_text("reason", untrusted_value.get("reason"), optional=True),
        hops=tuple(_hop(h) for h in untrusted_hops),
        public=tuple(_public(p) for p in untrusted_publics),
    )


def loads(untrusted_data: bytes) -> list[ForwardStatus]:
    """Parse a forward-listing payload; any malformed part raises ValidationError."""
    try:
        untrusted_document = json.loads(untrusted_data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValidationError("payload", f"expected a JSON list ({err})") from None
    if not isinstance(untrusted_document, list):
        raise ValidationError("payload", "expected a JSON list of forwards")
    return [from_json_value(item) for item in untrusted_document]


def parsed_rule(status: ForwardStatus) -> ForwardRule | None:
    """The forward's rule as a value; None if the service sent text this client cannot read."""
    try:
        rule = parse_rule(status.rule)
    except ValidationError:
        return None
    return rule if isinstance(rule, ForwardRule) else None
