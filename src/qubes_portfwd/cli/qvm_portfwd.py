"""qvm-portfwd: port forwards in the user's words; each one is the feature `portfwd.<id>` of
its target qube."""

import argparse
import json
import sys
import time
from collections.abc import Sequence

from ..client import AdminClient, QubesdError
from ..model.errors import ValidationError
from ..model.forward_feature import feature_name
from ..model.forward_status import ForwardStatus
from ..model.rule import ForwardType, forward_id
from ..model.rule_text import format_rule
from ..model.topology import FEATURE_TUNNEL
from .forward_request import PROTO_CHOICES, ForwardRequest, forward_rule
from .forward_view import concerns, forward_json, forward_line, table_lines
from .nat_commands import add_nat_commands, run_nat_command
from .reporting import EXIT_OK, CliParser, run_reported

PROG = "qvm-portfwd"
MIN_ID_PREFIX = 4

EPILOG = """\
examples:
  qvm-portfwd add work tcp 80:8080 --external --from 192.0.2.0/24
  qvm-portfwd add work udp 5000-5010 --external --from any --for 2h
  qvm-portfwd add work tcp 22 --internal --from personal,vault --until-reboot
  qvm-portfwd list                      every forward, with its path and each hop's state
  qvm-portfwd list sys-firewall         the forwards of a qube or passing through it
  qvm-portfwd del 1a2b3c4d5e6f
"""


def build_parser() -> CliParser:
    parser = CliParser(
        prog=PROG,
        description="Forward ports from outside (or from other qubes) to a qube.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True
    add = commands.add_parser("add", help="forward a port to a qube; prints the forward's id")
    add.add_argument("qube", metavar="QUBE", help="the qube that receives the connections")
    add.add_argument("proto", metavar="PROTO", help=f"one of {', '.join(PROTO_CHOICES)}")
    add.add_argument(
        "ports",
        metavar="OUTSIDE_PORT[:QUBE_PORT]",
        help="port or range N-M exposed, and where it lands in the qube (default: the same)",
    )
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--external",
        dest="forwardtype",
        action="store_const",
        const=ForwardType.EXTERNAL,
        help="exposed on the outside of the network path (the LAN, or a VPN's far side)",
    )
    kind.add_argument(
        "--internal",
        dest="forwardtype",
        action="store_const",
        const=ForwardType.INTERNAL,
        help="exposed only to other qubes behind the same netvm",
    )
    add.add_argument(
        "--from",
        dest="sources",
        required=True,
        metavar="SOURCES",
        help="comma-separated: networks for --external (any = 0.0.0.0/0), qubes for --internal",
    )
    lifetime = add.add_mutually_exclusive_group()
    lifetime.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30s, 10m, 2h")
    lifetime.add_argument(
        "--until-reboot", action="store_true", help="remove it when the host reboots"
    )
    add.add_argument("--comment", metavar="TEXT", help="a note shown with the forward")
    add.add_argument(
        "--follow", action="store_true", help="keep it working when the qube's netvm changes"
    )
    listing = commands.add_parser("list", help="show forwards, their paths and hop states")
    listing.add_argument(
        "qube", metavar="QUBE", nargs="?", help="only forwards to or through this qube"
    )
    listing.add_argument(
        "--through", metavar="NETQUBE", help="only forwards passing through this network qube"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    remove = commands.add_parser("del", help="remove a forward")
    remove.add_argument("forward_id", metavar="ID", help="the forward's id (or a unique prefix)")
    rebind = commands.add_parser("rebind", help="bind a forward to its qube's current netvm path")
    rebind.add_argument("forward_id", metavar="ID", help="the forward's id (or a unique prefix)")
    add_nat_commands(commands)
    return parser


def _add(client: AdminClient, args: argparse.Namespace) -> None:
    request = ForwardRequest(
        untrusted_proto=args.proto,
        untrusted_ports=args.ports,
        forwardtype=args.forwardtype,
        untrusted_sources=args.sources,
        untrusted_duration=args.duration,
        until_reboot=args.until_reboot,
        untrusted_comment=args.comment,
        follow=args.follow,
    )
    rule = forward_rule(request, time.time())
    new_id = forward_id(args.qube, rule)
    if feature_name(new_id) in client.list_features(args.qube):
        raise ValidationError("forward", f"{new_id} already exists on {args.qube}")
    # One feature per forward: a concurrent change by another client is kept.
    print(client.add_forward(args.qube, format_rule(rule)))


def find_forward(known: dict[str, str], untrusted_id: str) -> tuple[str, str]:
    """(target, id) of the forward with this id, or with the only id starting with it.

    `known` maps forward ids to their targets.
    """
    if untrusted_id in known:
        return known[untrusted_id], untrusted_id
    matches = sorted(i for i in known if i.startswith(untrusted_id))
    if len(untrusted_id) < MIN_ID_PREFIX or not matches:
        raise ValidationError("ID", f"no forward {untrusted_id!r}; see `{PROG} list`")
    if len(matches) > 1:
        raise ValidationError(
            "ID", f"{untrusted_id!r} matches {', '.join(matches)}; give more digits"
        )
    return known[matches[0]], matches[0]


def _known_forwards(client: AdminClient, untrusted_id: str) -> dict[str, str]:
    """Forward ids and targets: the status document's, or every qube's `portfwd.<id>`
    features when the id is not in it (a forward not listed any more can still be removed)."""
    known = {s.id: s.target for s in client.forwards()}
    if any(i.startswith(untrusted_id) for i in known):
        return known
    for qube in client.list_qubes():
        try:
            known.update(dict.fromkeys(client.forward_ids(qube.name), qube.name))
        except QubesdError:
            continue
    return known


def _tunnel_edges(client: AdminClient, statuses: Sequence[ForwardStatus]) -> set[str]:
    """Edges that are VPN/Tor qubes, so their forwards are drawn from the tunnel, not the LAN."""
    edges = {s.hops[0].qube for s in statuses if s.hops and s.hops[0].role == "edge"}
    tunnels = set()
    for edge in edges:
        try:
            if FEATURE_TUNNEL not in client.list_features(edge):
                continue
            if client.get_feature(edge, FEATURE_TUNNEL) not in ("", "0"):
                tunnels.add(edge)
        except QubesdError:
            continue  # only the label of the path's start depends on it
    return tunnels


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    if args.through is not None:
        statuses = client.forwards_through(args.through)
    else:
        statuses = client.forwards()
    if args.qube is not None:
        if args.qube not in {q.name for q in client.list_qubes()}:
            raise ValidationError("QUBE", f"no qube {args.qube!r}; expected a qube of this host")
        statuses = [s for s in statuses if concerns(s, args.qube)]
    now = time.time()
    if args.json:
        print(json.dumps([forward_json(s, now) for s in statuses], indent=2, sort_keys=True))
        return
    tunnels = _tunnel_edges(client, statuses)
    for row in table_lines([forward_line(s, now, tunnels) for s in statuses]):
        print(row)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    client = AdminClient()
    if args.command == "add":
        _add(client, args)
    elif args.command == "list":
        _list(client, args)
    elif run_nat_command(client, args):
        pass
    else:
        target, found_id = find_forward(_known_forwards(client, args.forward_id), args.forward_id)
        if args.command == "del":
            client.remove_forward(target, found_id)
        else:
            client.rebind(target, found_id)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qvm-portfwd`; returns the exit code."""
    return run_reported(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
