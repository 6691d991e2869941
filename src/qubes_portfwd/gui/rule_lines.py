"""A qube's outbound rule list summed up as Qubes' firewall tab does (pure)."""

from collections.abc import Sequence


def outbound_summary(untrusted_lines: Sequence[str]) -> str:
    """Qubes' tab's choice: everything allowed, or limited to the listed rules."""
    filters = [line for line in untrusted_lines if "action=forward" not in line.split()]
    if [line.strip() for line in filters] in ([], ["action=accept"]):
        return "Outgoing connections: all allowed"
    return "Outgoing connections: limited to the rules below (first match decides)"
