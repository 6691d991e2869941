"""The agent program, given a qube's DB by its composition root (the product's `__main__`
opens QubesDB; the lab's `qubes_lab.roots.agent` opens the lab's stand-in).

Stopped by SIGTERM or SIGINT, or by an error (QubesDB gone: exit 1), it removes what it owns;
`--remove` does only that (uninstall, or a unit's ExecStopPost after a kill) and needs no DB.
nftables is reached through `open_nft` (libnftables in-process unless a root says otherwise)."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from ..ports.qube_db import QubeDb
from .in_force import InForceRecord
from .nft_library import NftLibrary, NftUnavailable
from .nft_netlink import NetlinkBatches
from .nft_port import BatchPort, NftPort
from .removal import remove_owned
from .service import Agent

WITHDRAW_TIMEOUT = 20.0  # taking back the report, one nft transaction; under the unit's 30 s stop


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qubes-portfwd-agent",
        description="Apply this qube's port forwarding entries with nftables.",
    )
    parser.add_argument("--qube", help="the qube this agent runs in (for logs; required to serve)")
    parser.add_argument(
        "--runtime-dir",
        help="where the hops in force are remembered across agent restarts (tmpfs, per qube)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="apply the current entries and exit")
    mode.add_argument(
        "--remove",
        action="store_true",
        help="remove this agent's tables, chains, sets and jumps from the ruleset and exit",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    return parser


async def _serve(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await agent.run(stop)
    finally:
        try:
            await asyncio.wait_for(agent.withdraw(), WITHDRAW_TIMEOUT)
        except TimeoutError:
            logging.getLogger("qubes_portfwd.agent").error(
                "removing this agent's rules took over %s s", WITHDRAW_TIMEOUT
            )


def run(
    args: argparse.Namespace,
    open_db: Callable[[argparse.Namespace], QubeDb],
    open_nft: Callable[[], NftPort] = NftLibrary,
    open_batches: Callable[[], BatchPort | None] = NetlinkBatches,
) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"qubes-portfwd-agent[{args.qube or '-'}] %(levelname)s %(message)s",
    )
    if not args.remove and not args.qube:
        logging.getLogger("qubes_portfwd.agent").error("--qube is required (except with --remove)")
        return 2
    try:
        nft = open_nft()
    except NftUnavailable as err:
        logging.getLogger("qubes_portfwd.agent").error("%s", err)
        return 1
    if args.remove:
        removed = asyncio.run(remove_owned(nft))
        if not removed.ok:
            logging.getLogger("qubes_portfwd.agent").error("%s", removed.output)
        return 0 if removed.ok else 1
    agent = Agent(
        open_db(args), nft, in_force=InForceRecord(args.runtime_dir), batches=open_batches()
    )
    if args.once:
        outcome = asyncio.run(agent.apply_current())
        return 0 if outcome.ok else 1
    try:
        asyncio.run(_serve(agent))
    except Exception:  # e.g. QubesDB went away: its rules are removed; the unit restarts it
        logging.getLogger("qubes_portfwd.agent").exception("stopped by an error")
        return 1
    logging.getLogger("qubes_portfwd.agent").info("stopped")
    return 0
