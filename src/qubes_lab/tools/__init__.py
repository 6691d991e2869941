"""The lab's stand-ins for Qubes' own dom0 tools (qvm-firewall, qvm-prefs): never the product's."""

LAB_TOOLS = frozenset({"qvm_firewall", "qvm_prefs"})


def module_of(tool: str) -> str:
    """The module `python -m` runs for a dom0 tool named like `qvm_firewall` or `qvm_portfwd`."""
    return f"qubes_lab.tools.{tool}" if tool in LAB_TOOLS else f"qubes_portfwd.cli.{tool}"
