"""`qubes-portfwd-settings --qube NAME`: the qube's firewall tab with port forwarding."""

import sys
from collections.abc import Sequence

from .launch import parser, run_window
from .settings_window import SettingsWindow


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser("qubes-portfwd-settings", "A qube's firewall rules and port forwarding.")
    arguments.add_argument("--qube", required=True, metavar="NAME", help="the qube to show")
    args, qt_args = arguments.parse_known_args(sys.argv[1:] if argv is None else argv)
    return run_window(args, lambda client: SettingsWindow(client, args.qube), qt_args)


if __name__ == "__main__":
    sys.exit(main())
