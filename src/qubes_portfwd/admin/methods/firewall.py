"""admin.vm.firewall.Get/Set/Reload: a qube's whole rule list, forwards included."""

from ...model.entries import MAX_FIREWALL_RULES
from ...model.errors import ValidationError
from ...model.firewall_revision import rules_text
from ...model.rule import FilterRule, Rule
from ...model.rule_text import format_rule
from ...planner.expiry import live_rules
from ..errors import QubesValueError
from ..firewall_guard import check_guarded_set
from ..forward_binding import parse_and_bind
from ..service import Service
from ..wire import Request
from . import method


def decode_rules_payload(untrusted_payload: bytes) -> str:
    """ASCII or nothing; the error names the line of the first offending byte."""
    try:
        return untrusted_payload.decode("ascii")
    except UnicodeDecodeError as err:
        line_no = untrusted_payload[: err.start].count(b"\n") + 1
        raise QubesValueError(f"rule: not ASCII (line {line_no})") from None


def current_text(service: Service, rules: tuple[Rule, ...]) -> str:
    """The list as Get answers it: a rule past its time is gone before its file is rewritten."""
    live = live_rules(rules, service.clock(), service.boot_id())
    return rules_text(format_rule(r) for r in live)


@method("admin.vm.firewall.Get")
async def firewall_get(service: Service, request: Request) -> bytes:
    return current_text(service, service.state.rules_of(request.dest)).encode("ascii")


@method("admin.vm.firewall.Set", payload=None)
async def firewall_set(service: Service, request: Request) -> bytes:
    untrusted_text = decode_rules_payload(request.untrusted_payload)
    qube = request.dest

    def change(current: tuple[Rule, ...], service: Service) -> list[Rule]:
        check_guarded_set(
            service.topology[qube].features,
            rules_text(untrusted_text.splitlines()),
            current_text(service, current),
        )
        try:
            rules = parse_and_bind(
                untrusted_text, qube, service.topology, service.boot_id(), current
            )
        except ValidationError as err:
            raise QubesValueError(str(err)) from None
        filters = sum(isinstance(r, FilterRule) for r in rules)
        if filters > MAX_FIREWALL_RULES:
            raise QubesValueError(
                f"rules: {filters} accept/drop rules; at most {MAX_FIREWALL_RULES} per qube"
                " (Qubes numbers them with four digits)"
            )
        return rules

    await service.change_rules(qube, change)
    return b""


@method("admin.vm.firewall.Reload")
async def firewall_reload(service: Service, request: Request) -> bytes:
    await service.reconcile()
    return b""
