"""`qubes-portfwd-natd --qube NAME`: in a network qube, on its QubesDB.

Dom0 is asked through our qrexec service `qubes.PortfwdNat` (`qrexec-client-vm`); the lab
runs the same program on its own adapters (`qubes_lab.roots.natd`).
"""

import sys
from collections.abc import Sequence

from ..adapters.qrexec_nat import QREXEC_CLIENT_VM, QrexecNat
from ..adapters.qubesdb_binding import QubesDbBinding
from .main import parser, run


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser()
    arguments.add_argument(
        "--qrexec-client",
        default=QREXEC_CLIENT_VM,
        help="the qrexec client that calls dom0 (default %(default)s)",
    )
    return run(
        arguments.parse_args(argv),
        lambda _args: QubesDbBinding(),
        lambda args: QrexecNat((args.qrexec_client,)),
    )


if __name__ == "__main__":
    sys.exit(main())
