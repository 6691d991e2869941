"""`qubes-portfwd-agent --qube NAME [--runtime-dir DIR] [--once]`: in a qube, on its QubesDB."""

import sys

from ..adapters.qubesdb_binding import QubesDbBinding
from .main import parser, run
from .nft_library import NftLibrary


def main(argv: list[str] | None = None) -> int:
    # Qubes' QubesDB; nftables through libnftables in this process (python3-nftables).
    return run(parser().parse_args(argv), lambda _args: QubesDbBinding(), NftLibrary)


if __name__ == "__main__":
    sys.exit(main())
