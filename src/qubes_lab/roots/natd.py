"""`python -m qubes_lab.roots.natd --qube NAME --store DIR --socket PATH`: the product's natd
in a lab network qube, on the lab's stand-in for its QubesDB and its qrexec stand-in socket."""

import sys

from qubes_portfwd.adapters.qubesd_socket_nat import QubesdSocketNat
from qubes_portfwd.client import AdminClient
from qubes_portfwd.natd.main import parser, run

from ..qube_db import FileQubeDb


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    arguments.add_argument("--store", required=True, help="the qube's DB directory in the lab")
    arguments.add_argument("--socket", default=None, help="the qube's qrexec stand-in socket")
    return run(
        arguments.parse_args(argv),
        lambda args: FileQubeDb(args.store),
        lambda args: QubesdSocketNat(AdminClient(args.socket, source=args.qube), args.qube),
    )


if __name__ == "__main__":
    sys.exit(main())
