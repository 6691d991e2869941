"""The method table: Admin API method name -> handler, with Qubes' generic checks."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from qubes_portfwd.controller.controller import Controller
from qubes_portfwd.controller.errors import ProtocolError, QubesVMNotFoundError

from ..properties import ADMIN_VM
from ..wire import Request

Handler = Callable[[Controller, Request], Awaitable[bytes]]
DestKind = Literal["adminvm", "qube", "any"]


@dataclass(frozen=True)
class MethodSpec:
    handler: Handler
    dest: DestKind
    wants_arg: bool | None
    wants_payload: bool | None


REGISTRY: dict[str, MethodSpec] = {}


def method(
    name: str, *, dest: DestKind = "qube", arg: bool | None = False, payload: bool | None = False
) -> Callable[[Handler], Handler]:
    """Register a handler; `arg`/`payload`: True required, False refused, None either."""

    def register(handler: Handler) -> Handler:
        REGISTRY[name] = MethodSpec(handler, dest, arg, payload)
        return handler

    return register


async def dispatch(service: Controller, request: Request) -> bytes:
    """Run a request's handler after the checks every method shares; returns the payload."""
    from . import feature, firewall, nat, property, vm  # noqa: F401  (they register)

    spec = REGISTRY.get(request.method)
    if spec is None:
        raise ProtocolError(f"No such method: {request.method}")
    if request.dest != ADMIN_VM and request.dest not in service.topology:
        raise QubesVMNotFoundError(request.dest)
    if spec.dest == "adminvm" and request.dest != ADMIN_VM:
        raise ProtocolError("expected destination to be AdminVM (dom0)")
    if spec.dest == "qube" and request.dest == ADMIN_VM:
        raise ProtocolError("expected destination to not be AdminVM (dom0)")
    if spec.wants_arg is True and not request.arg:
        raise ProtocolError("expected an argument")
    if spec.wants_arg is False and request.arg:
        raise ProtocolError("unexpected argument")
    if spec.wants_payload is False and request.untrusted_payload:
        raise ProtocolError("unexpected payload")
    return await spec.handler(service, request)
