"""qvm-firewall: Qubes' tool for a qube's firewall rules, extended with `action=forward`."""

import argparse
import sys
import time
from collections.abc import Sequence

from qubes_portfwd.cli.firewall_table import firewall_rows
from qubes_portfwd.cli.reporting import EXIT_OK, CliParser, run_reported
from qubes_portfwd.cli.rule_words import rule_from_words
from qubes_portfwd.cli.table import format_table
from qubes_portfwd.client import AdminClient
from qubes_portfwd.client.guarded_update import update_rules
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import ForwardRule, Rule, forward_id
from qubes_portfwd.model.rule_text import format_rule, parse_rule

PROG = "qvm-firewall"
DEFAULT_RULES = ("action=accept",)

EPILOG = """\
Rules can be given as positional arguments:
    <action> [<dsthost> [<proto> [<dstports>|<icmptype>]]]
    forward <forwardtype> [<proto> [<srcports> [<dstports> [<srchost>]]]]

And as keyword arguments:
    action=<action> [specialtarget=dns] [dsthost=<dsthost>]
    [proto=<proto>] [dstports=<dstports>] [icmptype=<icmptype>]
    [expire=<expire>] [comment=<comment>]
    action=forward forwardtype=external|internal [proto=tcp|udp]
    srcports=<ports> [dstports=<ports>] srchost=<sources>
    [follow=yes] [expire=<expire>|boot] [comment=<comment>]

Both forms can be mixed.

Available rule options:
    action         accept, drop or forward
    dst4, dst6     synonyms for dsthost
    dsthost        IP, network or hostname
                     (e.g. 10.5.3.2, 192.168.0.0/16, www.example.com, fd00::/8)
    dstports       port or port range (e.g. 443 or 1200-1400);
                     for a forward: the port(s) in the qube (default: srcports)
    icmptype       icmp type number (e.g. 8 for echo requests)
    proto          icmp, tcp or udp (a forward: tcp or udp; omitted: both)
    specialtarget  dns: the qube's configured DNS servers
    expire         seconds since 1/1/1970, or +seconds (e.g. +300 for
                     5 minutes); a forward also takes boot (until reboot)
    forwardtype    external (exposed on the outside of the path's edge) or
                     internal (exposed to other qubes behind the same netvm)
    srcports       the port(s) exposed outside (action=forward)
    srchost        who may connect: networks for external forwards, qube
                     names for internal ones, comma-separated; required
    follow         yes: keep the forward when the qube's netvm changes
    comment        free text, always last
"""


def build_parser() -> CliParser:
    parser = CliParser(
        prog=PROG,
        description="Manage a qube's firewall rules and port forwards.",
        epilog=EPILOG,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--reload", "-r", action="store_true", help="reload the rules even when unchanged"
    )
    parser.add_argument(
        "--raw", action="store_true", help="print rules as Admin API lines, not a table"
    )
    parser.add_argument("qube", metavar="VMNAME", help="the qube whose rules to show or change")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    add = commands.add_parser("add", help="add a rule")
    add.add_argument(
        "--before", type=int, metavar="N", help="insert before rule N instead of at the end"
    )
    add.add_argument("rule", nargs="+", metavar="RULE", help="the rule; see below")
    remove = commands.add_parser("del", help="remove a rule by number or by its text")
    remove.add_argument("--rule-no", dest="rule_no", type=int, metavar="N", help="rule number")
    remove.add_argument("rule", nargs="*", metavar="RULE", help="the rule to remove")
    listing = commands.add_parser("list", help="list the rules (the default)")
    # Accepted after `list` too, where users tend to type them.
    listing.add_argument("--raw", action="store_true", default=argparse.SUPPRESS)
    listing.add_argument("--reload", "-r", action="store_true", default=argparse.SUPPRESS)
    commands.add_parser("reset", help="remove every rule: back to Qubes' default (accept all)")
    return parser


def _same_rule(target: str, existing: Rule, wanted: Rule) -> bool:
    """Qubes matches rules by their text; a forward is matched by its id (the service may
    have added via= or bound expire=boot to this boot)."""
    if isinstance(wanted, ForwardRule):
        return isinstance(existing, ForwardRule) and (
            forward_id(target, existing) == forward_id(target, wanted)
        )
    return format_rule(existing) == format_rule(wanted)


def _add(client: AdminClient, target: str, rule: Rule, before: int | None) -> None:
    def edit(lines: list[str]) -> list[str]:
        if isinstance(rule, ForwardRule):
            new_id = forward_id(target, rule)
            for number, line in enumerate(lines):
                if _same_rule(target, parse_rule(line), rule):
                    raise ValidationError(
                        "rule", f"forward {new_id} is already rule {number} of {target}"
                    )
        position = len(lines) if before is None else before
        if not 0 <= position <= len(lines):
            raise ValidationError("--before", f"{position}; expected a rule number 0-{len(lines)}")
        return [*lines[:position], format_rule(rule), *lines[position:]]

    # Guarded: a rule list read here and changed by someone else meanwhile is read again.
    update_rules(client, target, edit)
    if isinstance(rule, ForwardRule):
        print(forward_id(target, rule))


def _remove(client: AdminClient, target: str, rule_no: int | None, wanted: Rule | None) -> None:
    def edit(lines: list[str]) -> list[str]:
        if rule_no is not None:
            if not 0 <= rule_no < len(lines):
                last = f"0-{len(lines) - 1}" if lines else "none: the list is empty"
                raise ValidationError("--rule-no", f"{rule_no}; expected a rule number ({last})")
            doomed = rule_no
        else:
            assert wanted is not None
            matches = [
                n for n, line in enumerate(lines) if _same_rule(target, parse_rule(line), wanted)
            ]
            if not matches:
                raise ValidationError("rule", f"no such rule in {target}: {format_rule(wanted)}")
            doomed = matches[0]
        return lines[:doomed] + lines[doomed + 1 :]

    update_rules(client, target, edit)


def _show(target: str, lines: Sequence[str], raw: bool) -> None:
    if raw:
        for line in lines:
            print(line)
        return
    rules = [parse_rule(line) for line in lines]
    for row in format_table(firewall_rows(target, rules, time.time())):
        print(row)


def _rule_lines(client: AdminClient, target: str) -> list[str]:
    return [line for line in client.firewall_get(target) if line.strip()]


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    client = AdminClient()
    target = args.qube
    if args.command == "reset":
        client.firewall_set(target, list(DEFAULT_RULES))
    elif args.command == "add":
        # Validated before any call, so a typo gets its message even with no service.
        _add(client, target, rule_from_words(args.rule, time.time()), args.before)
    elif args.command == "del":
        if (args.rule_no is None) == (not args.rule):
            raise ValidationError("rule", "say which rule: either --rule-no N or the rule itself")
        wanted = rule_from_words(args.rule, time.time()) if args.rule else None
        _remove(client, target, args.rule_no, wanted)
    else:
        _show(target, _rule_lines(client, target), args.raw)
    if args.reload:
        client.firewall_reload(target)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qvm-firewall`; returns the exit code."""
    return run_reported(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
