"""`qubes-portfwd-agent --qube NAME [--runtime-dir DIR] [--once]`: in a qube, on its QubesDB."""

import sys

from ..adapters.qubesdb_binding import QubesDbBinding
from .main import parser, run


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv), lambda _args: QubesDbBinding())


if __name__ == "__main__":
    sys.exit(main())
