"""`qubes-portfwd-overview`: every forward on the host, each path drawn hop by hop."""

import sys
from collections.abc import Sequence

from .launch import parser, run_window
from .overview_window import OverviewWindow


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser("qubes-portfwd-overview", "Every port forward on this host.")
    args, qt_args = arguments.parse_known_args(sys.argv[1:] if argv is None else argv)
    return run_window(args, OverviewWindow, qt_args)


if __name__ == "__main__":
    sys.exit(main())
