"""`qubes-portfwd-natd --qube NAME`: in a network qube, on its QubesDB."""

import sys
from collections.abc import Sequence

from ..adapters.qubesdb_binding import QubesDbBinding
from .main import parser, run


def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv), lambda _args: QubesDbBinding())


if __name__ == "__main__":
    sys.exit(main())
