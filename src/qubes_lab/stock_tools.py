"""Qubes' own dom0 tools (`qvm-firewall`, `qvm-features`, `qvm-prefs`, `qvm-ls`) run unchanged.

The pinned core-admin-client is put on the path of a child interpreter whose only change is
the socket `qubesadmin` connects to, so the stock tools talk to whatever serves the qubesd
protocol there (the lab's emulated qubesd now, the real one hosting our extension later).
"""

import os
import subprocess
import sys
import textwrap

from .upstream import source_tree

CLIENT = "qubes-core-admin-client"
TOOL_TIMEOUT = 60.0


def client_path() -> list[str]:
    """Import path for `qubesadmin`: its tree and its package metadata (the tools read it)."""
    tree = source_tree(CLIENT)
    metadata = tree.parent / f"{tree.name}-metadata"
    if not (metadata / "qubesadmin.egg-info").is_dir():
        metadata.mkdir(exist_ok=True)
        # egg_info into our own folder: the unpacked tree stays as verified.
        subprocess.run(
            [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(metadata)],
            cwd=tree,
            check=True,
            capture_output=True,
            timeout=TOOL_TIMEOUT,
        )
    return [str(tree), str(metadata)]


def run_tool(
    tool: str, args: list[str], socket_path: str | os.PathLike[str]
) -> subprocess.CompletedProcess[str]:
    """Run stock `tool` (e.g. "qvm-firewall") with `args` against `socket_path`."""
    module = "qubesadmin.tools." + tool.replace("-", "_")
    code = textwrap.dedent(
        f"""
        import importlib, sys
        sys.path[:0] = {client_path()!r}
        import qubesadmin.app, qubesadmin.config
        qubesadmin.config.QUBESD_SOCKET = {os.fspath(socket_path)!r}
        tool = importlib.import_module({module!r})
        sys.exit(tool.main({args!r}, app=qubesadmin.app.QubesLocal()))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
