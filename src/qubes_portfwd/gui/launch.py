"""What the three GUI commands share: arguments, the client, the Qt application."""

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from PySide6.QtWidgets import QApplication, QWidget

from ..client import AdminClient
from .calls import GUI_TIMEOUT


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    parsed = argparse.ArgumentParser(prog=prog, description=description)
    parsed.add_argument(
        "--socket",
        metavar="PATH",
        help="the admin service's socket (default: $QUBESD_SOCKET, else the standard path)",
    )
    return parsed


def run_window(
    args: argparse.Namespace, make_window: Callable[[AdminClient], QWidget], qt_args: Sequence[str]
) -> int:
    """Show the window and run Qt's loop until it closes; `qt_args` are Qt's own options."""
    # Qt's loop never returns to Python to raise KeyboardInterrupt: let Ctrl-C end the program.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    client = AdminClient(args.socket, timeout=GUI_TIMEOUT)
    window = make_window(client)
    window.show()
    return app.exec()
