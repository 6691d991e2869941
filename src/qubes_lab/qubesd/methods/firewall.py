"""admin.vm.firewall.Get/Set/Reload: a qube's accept/drop rules, as stock qubesd has them.

Forwards are not firewall rules: they are features `portfwd.<id>` (methods/feature.py), so a
Set holding one is refused and Get never shows one, and stock clients read every list.
"""

import asyncio

from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.controller.errors import QubesValueError
from qubes_portfwd.controller.firewall_guard import check_guarded_set
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.firewall_revision import canonical_text, rules_text
from qubes_portfwd.model.rule import FilterRule, ForwardRule, Rule
from qubes_portfwd.model.rule_text import format_rule, parse_rule
from qubes_portfwd.planner.expiry import live_rules

from ...qubes_firewall.dom0 import FirewallHostState
from ...qubes_firewall.entries import MAX_FIREWALL_RULES
from ..wire import Request
from . import method


def decode_rules_payload(untrusted_payload: bytes) -> str:
    """ASCII or nothing; the error names the line of the first offending byte."""
    try:
        return untrusted_payload.decode("ascii")
    except UnicodeDecodeError as err:
        line_no = untrusted_payload[: err.start].count(b"\n") + 1
        raise QubesValueError(f"rule: not ASCII (line {line_no})") from None


FORWARD_REFUSED = "forward rules are stored as features portfwd.<id>: use qvm-portfwd"


def current_text(service: Controller, rules: tuple[Rule, ...]) -> str:
    """The list as Get answers it: a rule past its time is gone before its file is rewritten."""
    live = live_rules(rules, service.clock(), service.boot_id())
    return rules_text(format_rule(r) for r in live if isinstance(r, FilterRule))


def parse_filters(untrusted_text: str) -> list[FilterRule]:
    """A whole Set payload of accept/drop rules, all or nothing; errors name line and field."""
    rules: list[FilterRule] = []
    for line_no, untrusted_line in enumerate(untrusted_text.splitlines(), start=1):
        if not untrusted_line.strip():
            continue
        try:
            rule = parse_rule(untrusted_line)
            if isinstance(rule, ForwardRule):
                raise ValidationError("action", FORWARD_REFUSED)
        except ValidationError as err:
            raise err.at_line(line_no) from None
        rules.append(rule)
    return rules


@method("admin.vm.firewall.Get")
async def firewall_get(service: Controller, request: Request) -> bytes:
    return current_text(service, service.state.rules_of(request.dest)).encode("ascii")


@method("admin.vm.firewall.Set", payload=None)
async def firewall_set(service: Controller, request: Request) -> bytes:
    untrusted_text = decode_rules_payload(request.untrusted_payload)
    qube = request.dest

    def change(current: tuple[Rule, ...], service: Controller) -> list[Rule]:
        check_guarded_set(
            service.topology[qube].features,
            canonical_text(untrusted_text.splitlines()),
            canonical_text(current_text(service, current).splitlines()),
        )
        try:
            filters = parse_filters(untrusted_text)
        except ValidationError as err:
            raise QubesValueError(str(err)) from None
        if len(filters) > MAX_FIREWALL_RULES:
            raise QubesValueError(
                f"rules: {len(filters)} accept/drop rules; at most {MAX_FIREWALL_RULES} per qube"
                " (Qubes numbers them with four digits)"
            )
        return [*filters, *(r for r in current if isinstance(r, ForwardRule))]

    await service.change_rules(qube, change)
    return b""


@method("admin.vm.firewall.Reload")
async def firewall_reload(service: Controller, request: Request) -> bytes:
    """Write the qube's entries into its netvm again (and, for a netvm, its downstream
    qubes' into it: what the lab asks for when it (re)started a qube), then re-publish."""
    state = service.state
    if isinstance(state, FirewallHostState):
        async with service.lock:
            await asyncio.to_thread(state.reload_started, request.dest)
    await service.reconcile()
    return b""
