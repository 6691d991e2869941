"""The NAT channel over qrexec: `qrexec-client-vm @adminvm qubes.PortfwdNat+OP`, one per call.

qrexec has no Python library on a qube's side, so each call runs Qubes' own client as a
process (bounded in time). What goes through is the lab adapter's: the request line out, an
Admin API framed reply back, decoded by the same code (`client.connection.parse_reply`,
`client.admin_client.nat_fields`, `qubesd_socket_nat.refusal_of`). qrexec exits 0 whenever
our service answered; 126 when dom0's qrexec policy refused the call.
"""

import subprocess
from collections.abc import Sequence

from ..client.admin_client import nat_fields
from ..client.connection import ProtocolViolation, QubesdError, parse_reply
from ..ports.nat_channel import NatRefused, Refusal
from .qubesd_socket_nat import refusal_of

QREXEC_CLIENT_VM = "/usr/bin/qrexec-client-vm"
SERVICE = "qubes.PortfwdNat"  # dom0's side: qrexec/nat_service.py (same name)
ADMIN_VM = "@adminvm"
EXIT_REFUSED = 126  # qrexec's "request refused" (the policy said deny)
EXIT_NOT_FOUND = 127  # qrexec's "service not found" (not installed in dom0)
# Above natd's longest wait for the user's answer in dom0 (natd/dom0.py ASK_WAIT).
CALL_TIMEOUT = 120.0
MAX_REPLY = 64 * 1024


class QrexecNat:
    """`program` is the argv that runs qrexec-client-vm (tests give a stand-in)."""

    def __init__(
        self, program: Sequence[str] = (QREXEC_CLIENT_VM,), timeout: float = CALL_TIMEOUT
    ) -> None:
        self.program = tuple(program)
        self.timeout = timeout

    def request(self, line: str) -> dict[str, str]:
        return nat_fields(self._call("Request", line).decode("ascii", "replace"))

    def address(self, client: str) -> str:
        return self._call("Address", client).decode("ascii", "replace").strip()

    def _call(self, operation: str, text: str) -> bytes:
        try:
            payload = text.encode("ascii")
        except UnicodeEncodeError:
            raise NatRefused(Refusal.FAILED, "request: expected ASCII text") from None
        argv = [*self.program, ADMIN_VM, f"{SERVICE}+{operation}"]
        try:
            done = subprocess.run(argv, input=payload, capture_output=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise NatRefused(Refusal.FAILED, f"dom0 gave no answer in {self.timeout} s") from None
        except OSError as err:
            raise NatRefused(Refusal.FAILED, f"{argv[0]}: {err.strerror or err}") from None
        if done.returncode == EXIT_REFUSED:
            raise NatRefused(Refusal.DENIED, f"dom0's qrexec policy refuses {SERVICE} here")
        if done.returncode == EXIT_NOT_FOUND:
            raise NatRefused(Refusal.FAILED, f"dom0 has no {SERVICE} service (not installed?)")
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise NatRefused(
                Refusal.FAILED, f"{argv[0]} exited with {done.returncode}: {''.join(said)}"
            )
        if len(done.stdout) > MAX_REPLY:
            raise NatRefused(Refusal.FAILED, f"reply larger than {MAX_REPLY} bytes")
        try:
            return parse_reply(done.stdout)
        except QubesdError as err:
            raise refusal_of(err) from None
        except ProtocolViolation as err:
            raise NatRefused(Refusal.FAILED, str(err)) from None
