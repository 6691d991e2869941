"""`python -m qubes_lab.roots.natd --qube NAME --store DIR ...`: the product's natd in a
lab network qube, on the lab's stand-in for its QubesDB."""

import sys

from qubes_portfwd.natd.main import parser, run

from ..qube_db import FileQubeDb


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    arguments.add_argument("--store", required=True, help="the qube's DB directory in the lab")
    return run(arguments.parse_args(argv), lambda args: FileQubeDb(args.store))


if __name__ == "__main__":
    sys.exit(main())
