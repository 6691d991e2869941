"""admin.vm.firewall.Get/Set/Reload: a qube's whole rule list, forwards included."""

from ...model.errors import ValidationError
from ...model.rule import Rule
from ...model.rule_text import format_rule
from ...planner.expiry import live_rules
from ..errors import QubesValueError
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


@method("admin.vm.firewall.Get")
async def firewall_get(service: Service, request: Request) -> bytes:
    # A rule past its time is gone, even in the moment before its file is rewritten.
    rules = live_rules(service.state.rules_of(request.dest), service.clock(), service.boot_id())
    return "".join(format_rule(r) + "\n" for r in rules).encode("ascii")


@method("admin.vm.firewall.Set", payload=None)
async def firewall_set(service: Service, request: Request) -> bytes:
    untrusted_text = decode_rules_payload(request.untrusted_payload)
    qube = request.dest

    def change(current: tuple[Rule, ...], service: Service) -> list[Rule]:
        try:
            return parse_and_bind(untrusted_text, qube, service.topology, service.boot_id())
        except ValidationError as err:
            raise QubesValueError(str(err)) from None

    await service.change_rules(qube, change)
    return b""


@method("admin.vm.firewall.Reload")
async def firewall_reload(service: Service, request: Request) -> bytes:
    await service.reconcile()
    return b""
