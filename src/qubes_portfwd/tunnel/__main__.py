"""`python -m qubes_portfwd.tunnel --qube NAME --gateway ADDR`: in a VPN qube, on its QubesDB."""

from ..adapters.qubesdb_binding import QubesDbBinding
from .main import parser, run


def main(argv: list[str] | None = None) -> None:
    run(parser().parse_args(argv), lambda _args: QubesDbBinding())


if __name__ == "__main__":
    main()
