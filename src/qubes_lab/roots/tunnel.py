"""`python -m qubes_lab.roots.tunnel --qube NAME --store DIR --gateway ADDR`: the product's
lease keeper in a lab tunnel qube."""

from qubes_portfwd.tunnel.main import parser, run

from ..qube_db import FileQubeDb


def main(argv: list[str] | None = None) -> None:
    arguments = parser()
    arguments.add_argument("--store", required=True, help="the qube's DB directory in the lab")
    run(arguments.parse_args(argv), lambda args: FileQubeDb(args.store))


if __name__ == "__main__":
    main()
