"""`qubes-portfwd-prompt`: answer qubes' NAT traversal requests (dom0)."""

import sys
from collections.abc import Sequence

from .launch import parser, run_window
from .prompt_window import PromptWindow


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser("qubes-portfwd-prompt", "Answer NAT traversal requests of qubes.")
    args, qt_args = arguments.parse_known_args(sys.argv[1:] if argv is None else argv)
    return run_window(args, PromptWindow, qt_args)


if __name__ == "__main__":
    sys.exit(main())
