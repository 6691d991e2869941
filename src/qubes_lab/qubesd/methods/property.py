"""admin.vm.property.*: the properties the feature needs, in Qubes' reply forms."""

from qubes_portfwd.controller.controller import Controller, TopologyChange
from qubes_portfwd.controller.errors import ProtocolError
from qubes_portfwd.model.topology import Topology

from .. import properties
from ..wire import Request
from . import method


def _escape(line: str) -> str:
    """GetAll puts one property a line, so values escape `\\` and newlines as Qubes does."""
    return line.replace("\\", "\\\\").replace("\n", "\\n")


def _explicit(service: Controller, qube: str) -> frozenset[str]:
    return service.state.explicit.get(qube, frozenset())


@method("admin.vm.property.List", dest="any")
async def property_list(service: Controller, request: Request) -> bytes:
    return "".join(f"{name}\n" for name in properties.names_for(request.dest)).encode("ascii")


@method("admin.vm.property.Get", dest="any", arg=True)
async def property_get(service: Controller, request: Request) -> bytes:
    value = properties.get(
        request.dest, service.topology, _explicit(service, request.dest), request.arg
    )
    return value.reply().encode("utf-8")


@method("admin.vm.property.GetDefault", dest="any", arg=True)
async def property_get_default(service: Controller, request: Request) -> bytes:
    if request.dest == properties.ADMIN_VM or request.arg not in properties.WRITABLE:
        properties.get(request.dest, service.topology, frozenset(), request.arg)
        return b""
    seeded = properties.reset(service.topology, service.state.seed, request.dest, request.arg)
    value = properties.get(request.dest, seeded, frozenset(), request.arg)
    return f"type={value.type} {value.value}".encode()


@method("admin.vm.property.GetAll", dest="any")
async def property_get_all(service: Controller, request: Request) -> bytes:
    explicit = _explicit(service, request.dest)
    lines = []
    for name in properties.names_for(request.dest):
        value = properties.get(request.dest, service.topology, explicit, name)
        lines.append(_escape(f"{name} {value.reply()}") + "\n")
    return "".join(lines).encode("utf-8")


@method("admin.vm.property.Set", dest="any", arg=True, payload=None)
async def property_set(service: Controller, request: Request) -> bytes:
    try:
        untrusted_value = request.untrusted_payload.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"{request.arg}: the value must be ASCII") from None
    qube, prop = request.dest, request.arg

    def change(topology: Topology, explicit: dict[str, frozenset[str]]) -> Topology:
        updated = properties.set_value(topology, qube, prop, untrusted_value)
        explicit[qube] = explicit.get(qube, frozenset()) | {prop}
        return updated

    await _change_and_tell(service, qube, prop, change)
    return b""


@method("admin.vm.property.Reset", dest="any", arg=True)
async def property_reset(service: Controller, request: Request) -> bytes:
    qube, prop = request.dest, request.arg

    def change(topology: Topology, explicit: dict[str, frozenset[str]]) -> Topology:
        updated = properties.reset(topology, service.state.seed, qube, prop)
        explicit[qube] = explicit.get(qube, frozenset()) - {prop}
        return updated

    await _change_and_tell(service, qube, prop, change)
    return b""


async def _change_and_tell(
    service: Controller, qube: str, prop: str, change: TopologyChange
) -> None:
    """Commit the change; if it moved a qube to another netvm, let the platform re-attach it.

    Like qubesd, the call returns once the running qube is re-attached. The re-attach comes
    before the publish: a netvm's agent refuses a DNAT to a qube not yet behind it, which
    would hold the forward's outer hops back until the next reconcile. A failed re-attach
    is logged and leaves the committed change in place.
    """

    async def reattach(before: Topology, after: Topology) -> None:
        if prop != "netvm" or qube not in before or qube not in after:
            return
        if after[qube].netvm != before[qube].netvm and service.netvm_hook is not None:
            await service.netvm_hook.run(qube)

    await service.change_topology(change, reattach)
