"""`qvm-portfwd pending | approve ID | deny ID | nat-policy QUBE`: NAT traversal asks.

A qube's policy is its feature `portfwd-nat-policy` (lines joined by `;`): `nat-policy`
shows it one line each and `--set` replaces it in one feature Set; qvm-features works too.
"""

import argparse
from typing import Any

from ..client import AdminClient
from ..model.errors import ValidationError
from .table import format_table

NAT_COMMANDS = ("pending", "approve", "deny", "nat-policy")
HEADER = ("ID", "QUBE", "VIA", "PROTO", "OUTSIDE", "INSIDE", "LIFETIME", "ORIGIN", "EXPIRES")


def add_nat_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    commands.add_parser("pending", help="NAT traversal requests waiting for your decision")
    approve = commands.add_parser("approve", help="grant a pending NAT traversal request")
    approve.add_argument("request_id", metavar="ID", help="the request's id (see pending)")
    deny = commands.add_parser("deny", help="refuse a pending NAT traversal request")
    deny.add_argument("request_id", metavar="ID", help="the request's id (see pending)")
    policy = commands.add_parser(
        "nat-policy", help="show or set which NAT traversal requests of a qube need you"
    )
    policy.add_argument("qube", metavar="QUBE")
    policy.add_argument(
        "--set",
        dest="lines",
        action="append",
        metavar="LINE",
        help="replace the policy; repeat for each line: "
        "'ports=N[-M] action=deny|allow|ask [max-lifetime=SECONDS]' (first match decides; "
        "no match: ask); --set '' clears it. Stored as the feature portfwd-nat-policy",
    )


def _pending_rows(client: AdminClient) -> list[str]:
    rows = [HEADER]
    for entry in client.nat_pending():
        description = entry.get("description", "")
        origin = (
            f"{entry.get('origin', '')}: {description}" if description else entry.get("origin", "")
        )
        rows.append(
            (
                entry.get("id", ""),
                entry.get("qube", ""),
                entry.get("via", ""),
                entry.get("proto", ""),
                entry.get("port", ""),
                entry.get("internal-port", ""),
                f"{entry.get('lifetime', '')}s",
                origin,
                f"in {entry.get('expires-in', '?')}s",
            )
        )
    return format_table(rows) if len(rows) > 1 else []


def _check_id(untrusted_id: str) -> str:
    if not (len(untrusted_id) == 8 and all(c in "0123456789abcdef" for c in untrusted_id)):
        raise ValidationError("ID", "expected the 8 hex digits shown by `qvm-portfwd pending`")
    return untrusted_id


def run_nat_command(client: AdminClient, args: argparse.Namespace) -> bool:
    """Run the command if it is one of these; False leaves it to the caller."""
    if args.command == "pending":
        for row in _pending_rows(client):
            print(row)
    elif args.command == "approve":
        grant = client.nat_approve(_check_id(args.request_id))
        print(f"{grant.get('id', '')} {grant.get('address', '')}:{grant.get('port', '')}")
    elif args.command == "deny":
        client.nat_deny(_check_id(args.request_id))
    elif args.command == "nat-policy":
        if args.lines is not None:
            client.nat_policy_set(args.qube, [line for line in args.lines if line.strip()])
        for line in client.nat_policy_get(args.qube):
            print(line)
    else:
        return False
    return True
