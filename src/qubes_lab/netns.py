"""Thin wrappers over `ip` and `nft`: namespaces, commands inside them, nothing in the host."""

import contextlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
COMMAND_TIMEOUT = 20.0  # seconds: generous for a loaded CI machine, still bounded


class LabCommandError(RuntimeError):
    """A command the lab ran failed; the message carries its argv and stderr."""


def run(
    argv: Sequence[str], *, input_text: str | None = None, timeout: float = COMMAND_TIMEOUT
) -> str:
    """Run argv to completion, return stdout; LabCommandError with stderr when it fails."""
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LabCommandError(f"{' '.join(argv)}: no answer within {timeout} s") from None
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise LabCommandError(f"{' '.join(argv)}: exit {result.returncode}: {detail}")
    return result.stdout


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


# Interfaces made later inherit `default`. Without duplicate address detection a new link's
# link-local address is usable at once: with it, the first IPv6 packet after a veth came up
# waited about a second for neighbour discovery (seen: the first connect after `up` failing).
NO_DAD = {"net/ipv6/conf/default/accept_dad": "0", "net/ipv6/conf/all/accept_dad": "0"}


def add(netns: str) -> None:
    run(["ip", "netns", "add", netns])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    sysctls(netns, NO_DAD)


def delete(netns: str) -> None:
    if exists(netns):
        run(["ip", "netns", "delete", netns])


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside `netns` (with its /etc/netns/<netns> files)."""
    return ["ip", "netns", "exec", netns, *argv]


def run_in(netns: str, argv: Sequence[str], *, input_text: str | None = None) -> str:
    return run(exec_argv(netns, argv), input_text=input_text)


def ip_batch(netns: str, commands: Iterable[str]) -> None:
    """Run `ip` commands inside netns in one process (fails on the first error)."""
    script = "".join(f"{line}\n" for line in commands)
    if script:
        run(["ip", "-n", netns, "-batch", "-"], input_text=script)


def sysctls(netns: str, settings: Mapping[str, str]) -> None:
    """Write sysctls (slash form: names may hold dots) inside netns; the host is untouched."""
    if settings:
        run_in(netns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])


def nft_load(netns: str, script: str) -> None:
    """Load an nft script as one transaction inside netns."""
    run_in(netns, ["nft", "-f", "-"], input_text=script)


def nft_tables(netns: str) -> list[tuple[str, str]]:
    """(family, name) of every nftables table inside netns."""
    listed = json.loads(run_in(netns, ["nft", "-j", "list", "tables"]))["nftables"]
    return [(t["table"]["family"], t["table"]["name"]) for t in listed if "table" in t]


def nft_ruleset(netns: str) -> str:
    return run_in(netns, ["nft", "list", "ruleset"])


def link_names(netns: str) -> list[str]:
    out = run(["ip", "-n", netns, "-o", "link", "show"])
    # `ip -o link` lines look like "3: vif6.0@if2: <...>"; the name ends at '@' or ':'.
    return [line.split(": ", 2)[1].split("@", 1)[0] for line in out.splitlines() if ": " in line]


def write_netns_etc(netns: str, files: Mapping[str, str]) -> Path:
    """Files `ip netns exec` binds over /etc/<name> for processes in netns (hosts, resolv.conf)."""
    directory = ETC_NETNS / netns
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def remove_netns_etc(netns: str) -> None:
    directory = ETC_NETNS / netns
    if directory.is_dir():
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    # /etc/netns itself is removed only when no other lab (or anyone) still uses it.
    with contextlib.suppress(OSError):
        ETC_NETNS.rmdir()
