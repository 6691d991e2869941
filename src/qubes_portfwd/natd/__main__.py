"""`qubes-portfwd-natd --qube NAME`: in a network qube, on its QubesDB.

Dom0 is reached over a socket speaking the qubesd protocol (`--socket`); the qrexec channel
of a stock host replaces it in issue 16.
"""

import sys
from collections.abc import Sequence

from ..adapters.qubesd_socket_nat import QubesdSocketNat
from ..adapters.qubesdb_binding import QubesDbBinding
from ..client import AdminClient
from .main import parser, run


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser()
    arguments.add_argument("--socket", default=None, help="dom0's socket for NAT requests")
    return run(
        arguments.parse_args(argv),
        lambda _args: QubesDbBinding(),
        lambda args: QubesdSocketNat(AdminClient(args.socket, source=args.qube), args.qube),
    )


if __name__ == "__main__":
    sys.exit(main())
