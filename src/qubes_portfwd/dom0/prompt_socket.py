"""Dom0's prompt for NAT requests the policy says to ask about, on a stock host.

Stock qubesd takes no methods of ours, so the extension serves `admin.portfwd.Pending`,
`Approve+ID` and `Deny+ID` on a socket of its own in dom0 (mode 0660, group `qubes`, like
qubesd's: only dom0's users reach it), in qubesd's own framing, answered by the same
controller handlers the lab's qubesd registers. `qvm-portfwd pending|approve|deny` and the
prompt window reach it through `QUBES_PORTFWD_PROMPT_SOCKET`.
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path

from ..controller import nat_requests
from ..controller.controller import Controller
from ..controller.errors import PermissionDenied, ProtocolError
from ..qrexec.header import ServiceCall
from ..qrexec.nat_service import READ_TIMEOUT, SOCKET_GROUP, NatService, serve_unix

PROMPT_SOCKET = Path("/var/run/qubes-portfwd/prompt.sock")
DOM0 = "dom0"
METHODS = {
    "admin.portfwd.Pending": (nat_requests.portfwd_pending, False),
    "admin.portfwd.Approve": (nat_requests.portfwd_approve, True),
    "admin.portfwd.Deny": (nat_requests.portfwd_deny, True),
}
# Answering an ask is one person at dom0's screen; a few callers at once are plenty.
MAX_OPEN = 8


@dataclass(frozen=True)
class _Call:
    dest: str
    arg: str
    untrusted_payload: bytes


class PromptService(NatService):
    """The NAT service's reading and framing, with dom0's three prompt methods."""

    from_dom0 = True

    async def _dispatch(self, call: ServiceCall, untrusted_payload: bytes) -> bytes:
        if call.service not in METHODS:
            raise PermissionDenied(f"method: expected one of {', '.join(sorted(METHODS))}")
        handler, takes_arg = METHODS[call.service]
        if takes_arg != bool(call.argument):
            form = "a request id" if takes_arg else "no argument"
            raise ProtocolError(f"argument: {call.service} takes {form}")
        return await handler(self.controller, _Call(DOM0, call.argument, untrusted_payload))


async def serve_prompt_requests(
    controller: Controller,
    socket_path: Path = PROMPT_SOCKET,
    *,
    group: str | None = SOCKET_GROUP,
    read_timeout: float = READ_TIMEOUT,
) -> asyncio.AbstractServer:
    """Listen for dom0's prompt on `socket_path`; call on qubesd's loop."""
    service = PromptService(controller, read_timeout, MAX_OPEN)
    return await serve_unix(service.handle, socket_path, group, "portfwd prompt")
