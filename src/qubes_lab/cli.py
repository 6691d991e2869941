"""`qubes-lab up [--topology FILE] | down [--purge] | status | restart PROCESS |
exec QUBE -- CMD… | reattach QUBE`."""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from qubes_portfwd.model.errors import ValidationError

from . import netns, recovery
from .admin_launcher import ServiceStartError
from .builder import Lab, LabNotUp

PROG = "qubes-lab"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
RESTART_HELP = """\
PROCESS [NAME] is a role as `qubes-lab status` lists it, or the same in two words:
  admind              dom0's admin service
  agent QUBE          the agent in QUBE            (or agent:QUBE)
  natd QUBE           the NAT-PMP/PCP/UPnP daemon in network qube QUBE
  dns lan|provider    a DNS responder of the outside world
  wireguard-go:NETNS  the VPN tunnel (every end is restarted: new keys)
  tunnel-keeper QUBE, provider-natpmp, provider-miniupnpd, miniupnpd QUBE
It is stopped by its recorded PID if still alive, started again and waited for until ready.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line on stderr."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)", EXIT_USAGE)


def _fail(message: str, code: int) -> NoReturn:
    # Errors of the commands the lab ran carry their stderr: the contract is one line.
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="An emulated Qubes host made of network namespaces.")
    parser.add_argument("--lab", default="default", help="lab name (namespaces qlab-<lab>-…)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up",
        help="build the lab, or bring it back: restart what died, keep dom0's state",
        description="Build the lab (with dom0's state if `down` kept it: every stored forward, "
        "property and feature, each qube with the properties dom0 has for it). On a lab that "
        "is up, restart exactly the processes that died and rebuild qubes whose namespace is "
        "gone; nothing when it is healthy. Never deletes dom0's state.",
    )
    up.add_argument(
        "--topology",
        type=Path,
        help="topology TOML file (default: the one the lab was made from, else built-in)",
    )
    up.add_argument("--no-agents", action="store_true", help="do not start the qubes' agents")
    down = commands.add_parser(
        "down",
        help="remove the lab's namespaces, processes and runtime files; keep dom0's state",
        description="Stop every process of the lab and delete its namespaces and runtime "
        "files, as a shutdown of the host. dom0's state (stored rules, properties, features) "
        "stays for the next `up`; forwards bound to this boot (expire=boot) end.",
    )
    down.add_argument("--purge", action="store_true", help="delete dom0's state too")
    commands.add_parser("status", help="show namespaces, processes and agents")
    restart = commands.add_parser(
        "restart",
        help="restart one process of the lab (see restart --help)",
        description=RESTART_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restart.add_argument("process", metavar="PROCESS", help="a role, or its kind: admind, agent")
    restart.add_argument("name", nargs="?", metavar="NAME", help="the qube or host: work, lan")
    moved = commands.add_parser(
        "reattach", help="move a running qube's uplink to the netvm dom0 has for it now"
    )
    moved.add_argument("qube")
    run = commands.add_parser("exec", help="run a command inside a qube or outside host")
    run.add_argument("qube", help="a qube, or lan, server, provider")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG…]")
    return parser


def _run(lab: Lab, args: argparse.Namespace) -> int:
    if args.command == "up":
        for line in lab.up(args.topology, agents=not args.no_agents):
            print(line)
        print(lab.status().format(), end="")
        if lab.name != "default":
            print(f"admin service: export QUBESD_SOCKET={lab.admin_socket}")
    elif args.command == "down":
        lab.down(keep_dom0=not args.purge)
        print(lab.status().format(), end="")
    elif args.command == "status":
        print(lab.status().format(), end="")
    elif args.command == "restart":
        words = [args.process] if args.name is None else [args.process, args.name]
        for line in recovery.restart(lab, recovery.role_named(words)):
            print(line)
    elif args.command == "reattach":
        changed = lab.reattach(args.qube)
        netvm = lab.topology[args.qube].netvm or "(none)"
        print(f"{args.qube}: {'re-attached to' if changed else 'already behind'} {netvm}")
    else:
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            _fail("exec: give a command after --", EXIT_USAGE)
        return lab.run(args.qube, command, timeout=None).returncode
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        _fail("needs root (network namespaces)", EXIT_FAILURE)
    try:
        return _run(Lab(args.lab), args)
    except (ValidationError, LabNotUp, netns.LabCommandError, ServiceStartError) as error:
        _fail(str(error), EXIT_FAILURE)
    except (OSError, ValueError) as error:
        _fail(str(error) or type(error).__name__, EXIT_FAILURE)
    except KeyboardInterrupt:
        _fail("interrupted: `qubes-lab status` shows what is left", EXIT_INTERRUPTED)
