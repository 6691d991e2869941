"""admin.vm.List: the qubes of the host, dom0 included."""

import uuid

from qubes_portfwd.controller.controller import Controller

from ..properties import ADMIN_VM
from ..wire import Request
from . import method

_UUID_NAMESPACE = uuid.UUID("5d0c3c5e-6d53-4c1b-9d1e-7a0f6c1f2b9a")


def vm_line(name: str, klass: str, state: str) -> str:
    return f"{name} class={klass} state={state} uuid={uuid.uuid5(_UUID_NAMESPACE, name)}\n"


@method("admin.vm.List", dest="any")
async def vm_list(service: Controller, request: Request) -> bytes:
    lines = []
    if request.dest == ADMIN_VM:
        lines.append(vm_line(ADMIN_VM, "AdminVM", "Running"))
        names = sorted(service.topology.qubes)
    else:
        names = [request.dest]
    for name in names:
        lines.append(vm_line(name, service.topology[name].klass, "Running"))
    return "".join(lines).encode("ascii")
