"""`qubes-lab up [--topology FILE] | down | status | exec QUBE -- CMD… | reattach QUBE`."""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qubes_portfwd.model.errors import ValidationError

from . import netns
from .builder import Lab, LabNotUp


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qubes-lab", description="An emulated Qubes host made of network namespaces."
    )
    parser.add_argument("--lab", default="default", help="lab name (namespaces qlab-<lab>-…)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build the lab (idempotent)")
    up.add_argument("--topology", type=Path, help="topology TOML file (default: built-in)")
    up.add_argument("--no-agents", action="store_true", help="do not start the qubes' agents")
    commands.add_parser("down", help="remove every namespace, process and file of the lab")
    commands.add_parser("status", help="show namespaces, processes and agents")
    moved = commands.add_parser(
        "reattach", help="move a running qube's uplink to the netvm dom0 has for it now"
    )
    moved.add_argument("qube")
    run = commands.add_parser("exec", help="run a command inside a qube or outside host")
    run.add_argument("qube", help="a qube, or lan, server, provider")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG…]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print("qubes-lab: needs root (network namespaces)", file=sys.stderr)
        return 1
    try:
        lab = Lab(args.lab)
        if args.command == "up":
            lab.up(args.topology, agents=not args.no_agents)
            print(lab.status().format(), end="")
            if lab.name != "default":
                print(f"admin service: export QUBESD_SOCKET={lab.admin_socket}")
        elif args.command == "down":
            lab.down()
        elif args.command == "status":
            print(lab.status().format(), end="")
        elif args.command == "reattach":
            changed = lab.reattach(args.qube)
            netvm = lab.topology[args.qube].netvm or "(none)"
            print(f"{args.qube}: {'re-attached to' if changed else 'already behind'} {netvm}")
        else:
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not command:
                print("qubes-lab exec: give a command after --", file=sys.stderr)
                return 2
            return lab.run(args.qube, command, timeout=None).returncode
    except (ValidationError, LabNotUp, netns.LabCommandError, OSError) as error:
        print(f"qubes-lab: {error}", file=sys.stderr)
        return 1
    return 0
