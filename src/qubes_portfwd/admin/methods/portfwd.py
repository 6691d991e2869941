"""The forward methods a firewall rule list cannot carry: live views, rebind and remove.

Views answer a JSON list of ForwardStatus (model.forward_status): `admin.portfwd.List`
(dom0: every forward), `admin.vm.portfwd.List` (the target's view) and
`admin.vm.portfwd.Through` (a network qube's view: forwards whose path passes through it).
"""

import re
from dataclasses import replace

from ...model import forward_status
from ...model.errors import ValidationError
from ...model.rule import ForwardRule, Rule, forward_id
from ...model.topology import PathError
from ..errors import QubesValueError
from ..forward_binding import current_via, parse_and_bind
from ..service import Service
from ..status_view import forward_statuses
from ..wire import Request
from . import method
from .firewall import decode_rules_payload

_ID_RE = re.compile(r"^[0-9a-f]{12}$")


def _check_id(untrusted_id: str) -> str:
    if not _ID_RE.match(untrusted_id):
        raise QubesValueError("forward id: expected 12 lowercase hex digits")
    return untrusted_id


async def _view(
    service: Service, *, through: str | None = None, target: str | None = None
) -> bytes:
    plan = service.plan()
    snapshots = await service.snapshots()
    return forward_status.dumps(forward_statuses(plan, snapshots, through=through, target=target))


@method("admin.portfwd.List", dest="adminvm")
async def portfwd_list(service: Service, request: Request) -> bytes:
    return await _view(service)


@method("admin.vm.portfwd.List")
async def vm_portfwd_list(service: Service, request: Request) -> bytes:
    return await _view(service, target=request.dest)


@method("admin.vm.portfwd.Through")
async def vm_portfwd_through(service: Service, request: Request) -> bytes:
    return await _view(service, through=request.dest)


def _matching(qube: str, rules: tuple[Rule, ...], wanted: str) -> list[int]:
    found = [
        i
        for i, r in enumerate(rules)
        if isinstance(r, ForwardRule) and forward_id(qube, r) == wanted
    ]
    if not found:
        raise QubesValueError(f"forward id: no forward {wanted} on {qube}")
    return found


@method("admin.vm.portfwd.Add", payload=True)
async def vm_portfwd_add(service: Service, request: Request) -> bytes:
    """Append one forward rule under the service lock; answers its id.

    A read-modify-write through firewall.Get/Set can lose a concurrent change; this cannot.
    """
    untrusted_text = decode_rules_payload(request.untrusted_payload)
    qube = request.dest
    added: list[str] = []

    def change(current: tuple[Rule, ...], service: Service) -> list[Rule]:
        try:
            new = parse_and_bind(untrusted_text, qube, service.topology, service.boot_id(), current)
        except ValidationError as err:
            raise QubesValueError(str(err)) from None
        if len(new) != 1 or not isinstance(new[0], ForwardRule):
            raise QubesValueError("rule: expected exactly one action=forward rule")
        added.append(forward_id(qube, new[0]))
        return [*current, *new]

    await service.change_rules(qube, change)
    return added[0].encode("ascii")


@method("admin.vm.portfwd.Rebind", arg=True)
async def vm_portfwd_rebind(service: Service, request: Request) -> bytes:
    wanted = _check_id(request.arg)
    qube = request.dest

    def change(current: tuple[Rule, ...], service: Service) -> list[Rule]:
        rules = list(current)
        for index in _matching(qube, current, wanted):
            rule = rules[index]
            assert isinstance(rule, ForwardRule)
            try:
                via = current_via(qube, rule, service.topology)
            except PathError as err:
                raise QubesValueError(f"via: no network path to bind to ({err})") from None
            rules[index] = replace(rule, via=via, follow=False)
        return rules

    await service.change_rules(qube, change)
    return b""


@method("admin.vm.portfwd.Remove", arg=True)
async def vm_portfwd_remove(service: Service, request: Request) -> bytes:
    wanted = _check_id(request.arg)
    qube = request.dest

    def change(current: tuple[Rule, ...], service: Service) -> list[Rule]:
        doomed = set(_matching(qube, current, wanted))
        return [r for i, r in enumerate(current) if i not in doomed]

    await service.change_rules(qube, change)
    return b""
