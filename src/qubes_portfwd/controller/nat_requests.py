"""NAT traversal methods: a network qube's daemon asks, dom0's policy or the user decides.

- `admin.vm.portfwd.NatRequest` (dest: the asking network qube; payload: nat_mapping's line)
  answers `result=granted id= address= port= lifetime=`, `result=pending id=`,
  `result=removed count=`, `result=limited limit= retry-after=` (that qube's share is used
  up, see nat_limits), or PermissionDenied.
- `admin.vm.portfwd.NatAddress+CLIENT` (dest: the network qube): the outside address.
- `admin.portfwd.Pending`, `admin.portfwd.Approve+ID`, `admin.portfwd.Deny+ID` (dom0).

The policy deciding them is the asked-for qube's feature `portfwd-nat-policy` (nat_policy.py),
set and read through the stock feature methods.

The daemon never creates rules: a grant is an external forward of the asking qube made
here, under the service lock, like a forward set as a feature.
The transport (the lab's qubesd; a qrexec service on a stock host) routes calls here.
"""

import asyncio
import ipaddress
import logging
from typing import Protocol

from ..model.errors import ValidationError
from ..model.ports import PortRange
from ..model.rule import ForwardRule, Rule, forward_id
from ..model.topology import PathError
from ..planner import conflicts_for
from .controller import Controller
from .errors import PermissionDenied, QubesValueError
from .forward_binding import bind_rule
from .nat_limits import (
    MAPPINGS_LIMIT,
    MappingQuotaFull,
    check_mapping_quota,
    limited_reply,
    refusal_reply,
)
from .nat_mapping import (
    Address,
    NatAsk,
    NatRequestFields,
    candidate_ports,
    find_mapping,
    format_reply,
    granted_lifetime,
    is_mapping,
    mapping_rule,
    owner_of,
    parse_nat_request,
    renewed,
)
from .nat_policy import Decision, NatAction, PolicyLine, decide, policy_of
from .nat_state import Grant
from .pending import PendingEntry, PendingFull, PendingTable
from .public_endpoint import close_handle, wait_for_endpoint

# Where the outside address of an edge comes from: a dom0 feature the user may set (the
# address the world sees, e.g. behind a home router), else the edge's own uplink address as
# written into its QubesDB by whoever configured its uplink (the lab; an agent on a real host).
FEATURE_PUBLIC_ADDRESS = "portfwd-public-address"
UPLINK_ADDRESS_KEY = "/qubes-portfwd-uplink-address4"
UPLINK_ADDRESS6_KEY = "/qubes-portfwd-uplink-address6"
# Behind a tunnel qube, its lease keeper records the provider's endpoint of each forward.
PUBLIC_ENDPOINT_WAIT = 10.0
UNKNOWN_ADDRESS = "0.0.0.0"
UNKNOWN_ADDRESS6 = "::"
# A stored policy our check never saw (set before the extension was installed) that does not
# parse: refuse every port rather than guess what its writer meant.
DENY_ALL = (PolicyLine(PortRange(1, 65535), NatAction.DENY),)

log = logging.getLogger(__name__)


class Request(Protocol):
    """One call as its transport delivers it (the lab's socket, a qrexec service on a host)."""

    dest: str
    arg: str
    untrusted_payload: bytes


def _request_text(untrusted_payload: bytes) -> str:
    try:
        return untrusted_payload.decode("ascii")
    except UnicodeDecodeError:
        raise QubesValueError("request: expected ASCII text") from None


def _address_arg(untrusted_arg: str) -> Address:
    try:
        return ipaddress.ip_address(untrusted_arg)
    except ValueError:
        raise QubesValueError("client: expected an IPv4 or IPv6 address") from None


def _asking_qube(service: Controller, netvm: str, client: Address) -> str:
    if not service.topology[netvm].provides_network:
        raise PermissionDenied(f"{netvm} does not provide network")
    qube = owner_of(service.topology, netvm, client)
    if qube is None:
        raise PermissionDenied(f"{client} is not a qube behind {netvm}")
    return qube


def _policy(service: Controller, qube: str) -> tuple[PolicyLine, ...]:
    try:
        return policy_of(service.topology[qube].features)
    except ValidationError as err:
        log.warning("NAT policy of %s unreadable, every port denied: %s", qube, err)
        return DENY_ALL


def _edge(service: Controller, qube: str) -> str:
    try:
        return service.topology.path(qube)[-1]
    except PathError as err:
        raise QubesValueError(f"via: no network path ({err})") from None


def outside_address(service: Controller, edge: str, family: int = 4) -> str:
    """The edge's address in `family` as the world sees it, or 0.0.0.0 (::) when nobody has
    said. The public-address feature counts in the family of its value."""
    candidates = [service.topology[edge].features.get(FEATURE_PUBLIC_ADDRESS, "")]
    store = service.publisher.store_for(edge)
    if service.topology[edge].is_tunnel:
        # The provider's address, as the keeper saw it in its leases (none before the first).
        candidates += [v.rpartition(":")[0] for v in sorted(store.read_public().values())]
    else:
        key = UPLINK_ADDRESS_KEY if family == 4 else UPLINK_ADDRESS6_KEY
        candidates.append(store.read()[1].get(key, ""))
    for untrusted_value in candidates:
        try:
            address = ipaddress.ip_address(untrusted_value)
        except ValueError:
            continue
        if address.version == family:
            return str(address)
    return UNKNOWN_ADDRESS if family == 4 else UNKNOWN_ADDRESS6


async def tunnel_endpoint(
    service: Controller, edge: str, fid: str, proto: str, port: int
) -> tuple[str, int] | None:
    """The provider's endpoint of a forward ending at a tunnel qube, once its keeper has it."""
    # A handle of its own: the publisher's (store_for) is read by its thread meanwhile.
    db = await asyncio.to_thread(service.publisher.db_for, edge)
    try:
        return await wait_for_endpoint(db, fid, proto, port, PUBLIC_ENDPOINT_WAIT)
    finally:
        close_handle(db)


async def _grant(service: Controller, ask: NatAsk, decision: Decision) -> Grant:
    """Create or renew the forward, publish it, and say where the world reaches it."""
    lines = _policy(service, ask.qube)
    lifetime = granted_lifetime(ask.lifetime, decision)
    made: list[ForwardRule] = []

    def change(current: tuple[Rule, ...], service: Controller) -> list[Rule]:
        now, boot_id = service.clock(), service.boot_id()
        rules = list(current)
        index = find_mapping(rules, ask)
        if index is not None:
            old = rules[index]
            assert isinstance(old, ForwardRule)
            rules[index] = renewed(old, lifetime, now)
            made.append(rules[index])  # type: ignore[arg-type]
            return rules
        check_mapping_quota(rules)
        ports = candidate_ports(ask.wanted_port, lines, decision)
        for port in [ask.wanted_port] if ask.exact else ports:
            try:
                rule = bind_rule(
                    mapping_rule(ask, port, lifetime, now), ask.qube, service.topology, boot_id
                )
            except ValidationError as err:
                raise QubesValueError(str(err)) from None
            state = service.state
            attempt = [*rules, rule]
            if not conflicts_for(
                ask.qube, attempt, state.rules, service.topology, now, boot_id, state.order
            ):
                assert isinstance(rule, ForwardRule)
                made.append(rule)
                return attempt
        raise QubesValueError("external-port: no free outside port the policy allows")

    await service.change_rules(ask.qube, change)
    rule = made[0]
    fid = forward_id(ask.qube, rule)
    edge = _edge(service, ask.qube)
    address, port = outside_address(service, edge, ask.family), rule.srcports.first
    if service.topology[edge].is_tunnel:
        endpoint = await tunnel_endpoint(service, edge, fid, ask.proto, port)
        address, port = endpoint if endpoint is not None else (UNKNOWN_ADDRESS, port)
    log.info(
        "NAT %s: %s %s/%d -> %s:%d for %d s",
        ask.origin,
        ask.qube,
        ask.proto,
        ask.internal_port,
        address,
        port,
        lifetime,
    )
    return {
        "result": "granted",
        "id": fid,
        "address": address,
        "port": port,
        "internal_port": ask.internal_port,
        "lifetime": lifetime,
    }


async def _remove(service: Controller, ask: NatAsk) -> int:
    removed: list[int] = []

    def change(current: tuple[Rule, ...], service: Controller) -> list[Rule]:
        kept = [r for r in current if not is_mapping(r, ask.proto, ask.internal_port, ask.family)]
        removed.append(len(current) - len(kept))
        return kept

    await service.change_rules(ask.qube, change)
    return removed[0]


async def vm_portfwd_nat_request(service: Controller, request: Request) -> bytes:
    try:
        fields = parse_nat_request(_request_text(request.untrusted_payload))
    except ValidationError as err:
        raise QubesValueError(str(err)) from None
    qube = _asking_qube(service, request.dest, fields.client)
    with service.nat.limits.share((request.dest, qube), service.clock()) as refusal:
        if refusal is not None:
            return refusal_reply(refusal)
        try:
            return await _nat_request(service, request.dest, qube, fields)
        except MappingQuotaFull:
            return limited_reply(MAPPINGS_LIMIT, 0.0)


async def _nat_request(
    service: Controller, netvm: str, qube: str, fields: NatRequestFields
) -> bytes:
    ask = NatAsk(
        netvm,
        qube,
        fields.client,
        fields.proto,
        fields.internal_port,
        fields.external_port,
        fields.lifetime,
        fields.origin,
        fields.description,
        fields.exact,
    )
    if ask.lifetime == 0:
        return format_reply(result="removed", count=await _remove(service, ask))
    state = service.nat
    existing = find_mapping(service.state.rules_of(qube), ask)
    port = ask.wanted_port
    if existing is not None:
        rule = service.state.rules_of(qube)[existing]
        assert isinstance(rule, ForwardRule)
        port = rule.srcports.first
    decision = decide(_policy(service, qube), port)
    if decision.action == NatAction.DENY:
        raise PermissionDenied(f"NAT traversal for {qube} port {port}: denied by policy")
    if decision.action == NatAction.ALLOW or existing is not None:
        return format_reply(**await _grant(service, ask, decision))
    try:
        entry = state.pending.add((ask, decision))
    except PendingFull:
        # Temporary, like any share used up: the client may ask again once one is answered.
        return limited_reply("pending", 0.0)
    wait = min(fields.wait, entry.remaining(service.clock()))
    try:
        grant = await asyncio.wait_for(asyncio.shield(entry.outcome), wait)
    except TimeoutError:
        return format_reply(result="pending", id=entry.id)
    if grant is None:
        raise PermissionDenied(f"NAT traversal for {qube} port {port}: refused by the user")
    return format_reply(**grant)


async def vm_portfwd_nat_address(service: Controller, request: Request) -> bytes:
    qube = _asking_qube(service, request.dest, _address_arg(request.arg))
    with service.nat.limits.share((request.dest, qube), service.clock()) as refusal:
        if refusal is not None:
            raise QubesValueError(f"client: {refusal.text}")
        return f"{outside_address(service, _edge(service, qube))}\n".encode()


def _pending_line(entry: PendingEntry[tuple[NatAsk, Decision], Grant], now: float) -> str:
    ask, decision = entry.ask
    fields = {
        "id": entry.id,
        "qube": ask.qube,
        "via": ask.via,
        "proto": ask.proto,
        "port": ask.wanted_port,
        "internal-port": ask.internal_port,
        "lifetime": granted_lifetime(ask.lifetime, decision),
        "origin": ask.origin,
        "expires-in": int(entry.remaining(now)),
    }
    if ask.family != 4:  # an IPv6 forward; IPv4 is what every other ask is
        fields["family"] = ask.family
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"{text} description={ask.description}" if ask.description else text


async def portfwd_pending(service: Controller, request: Request) -> bytes:
    now = service.clock()
    lines = [_pending_line(e, now) for e in service.nat.pending.entries()]
    return "".join(f"{line}\n" for line in lines).encode()


def _take(service: Controller, untrusted_id: str) -> PendingEntry[tuple[NatAsk, Decision], Grant]:
    try:
        return service.nat.pending.take(untrusted_id)
    except KeyError:
        raise QubesValueError(
            "ID: no pending request with this id (it may have timed out)"
        ) from None


async def portfwd_approve(service: Controller, request: Request) -> bytes:
    entry = _take(service, request.arg)
    ask, decision = entry.ask
    try:
        grant = await _grant(service, ask, decision)
    except MappingQuotaFull as err:
        PendingTable.settle(entry, None)
        raise QubesValueError(f"{ask.qube}: {err}") from None
    except BaseException:
        PendingTable.settle(entry, None)
        raise
    PendingTable.settle(entry, grant)
    return format_reply(**grant)


async def portfwd_deny(service: Controller, request: Request) -> bytes:
    PendingTable.settle(_take(service, request.arg), None)
    return b""
