"""qvm-prefs: show and change a qube's properties, as Qubes' tool does."""

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from qubes_portfwd.cli.reporting import EXIT_OK, CliParser, UsageError, run_reported
from qubes_portfwd.client import AdminClient, PropertyValue, QubesdError

PROG = "qvm-prefs"
# Qubes takes `none` for "no qube" in these properties and sends an empty value.
VM_PROPERTIES = ("default_dispvm", "netvm", "template", "guivm", "audiovm")
NO_SUCH_PROPERTY = "QubesNoSuchPropertyError"


def build_parser() -> CliParser:
    parser = CliParser(prog=PROG, description="Show or change a qube's properties.")
    parser.add_argument(
        "--hide-default", action="store_true", help="do not show properties at their default"
    )
    parser.add_argument(
        "--default", "-D", dest="reset", action="store_true", help="reset PROPERTY to its default"
    )
    parser.add_argument("--get", "-g", action="store_true", help="ignored; for old scripts")
    parser.add_argument("--set", "-s", action="store_true", help="ignored; for old scripts")
    parser.add_argument("qube", metavar="VMNAME")
    parser.add_argument("property", metavar="PROPERTY", nargs="?", help="the property")
    parser.add_argument("value", metavar="VALUE", nargs="?", help="its new value")
    return parser


def is_unset(prop: PropertyValue) -> bool:
    """No value at all: a qube reference set to none, or a bool without a value."""
    return prop.type in ("vm", "bool") and prop.value == ""


def property_lines(properties: Mapping[str, PropertyValue], hide_default: bool) -> list[str]:
    """Qubes' listing: `NAME  -  VALUE` when set, `NAME  D  VALUE` at its default."""
    if not properties:
        return []
    width = max(len(name) for name in properties)
    lines = []
    for name in sorted(properties):
        prop = properties[name]
        if prop.type == "bool" and is_unset(prop):
            lines.append(f"{name:{width}s}  U")
        elif not prop.is_default:
            lines.append(f"{name:{width}s}  -  {prop.value}".rstrip())
        elif not hide_default:
            lines.append(f"{name:{width}s}  D  {prop.value}".rstrip())
    return lines


def _property_call(prop: str, call: Any, *call_args: Any) -> Any:
    try:
        return call(*call_args)
    except QubesdError as err:
        if err.exc_type == NO_SUCH_PROPERTY:
            raise UsageError(f"no such property: {prop!r}") from None
        raise


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    client = AdminClient()
    if args.property is None:
        if args.reset or args.value is not None:
            raise UsageError("a value or --default needs a PROPERTY")
        for line in property_lines(client.get_all_properties(args.qube), args.hide_default):
            print(line)
        return EXIT_OK
    prop = args.property.replace("-", "_")
    if args.value is not None and args.reset:
        raise UsageError("give either a VALUE or --default, not both")
    if args.value is not None:
        value = args.value
        if prop in VM_PROPERTIES and value.lower() == "none":
            value = ""
        _property_call(prop, client.set_property, args.qube, prop, value)
    elif args.reset:
        _property_call(prop, client.reset_property, args.qube, prop)
    else:
        current = _property_call(prop, client.get_property, args.qube, prop)
        # Qubes prints nothing for a property without a value (netvm none).
        if not (args.hide_default and current.is_default) and not is_unset(current):
            print(current.value)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qvm-prefs`; returns the exit code."""
    return run_reported(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
