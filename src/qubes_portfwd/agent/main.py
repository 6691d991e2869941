"""The agent program, given a qube's DB by its composition root (the product's `__main__`
opens QubesDB; the lab's `qubes_lab.roots.agent` opens the lab's stand-in)."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from ..ports.qube_db import QubeDb
from .in_force import InForceRecord
from .service import Agent


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qubes-portfwd-agent",
        description="Apply this qube's port forwarding entries with nftables.",
    )
    parser.add_argument("--qube", required=True, help="the qube this agent runs in (for logs)")
    parser.add_argument(
        "--runtime-dir",
        help="where the hops in force are remembered across agent restarts (tmpfs, per qube)",
    )
    parser.add_argument("--once", action="store_true", help="apply the current entries and exit")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    return parser


async def _serve(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)


def run(args: argparse.Namespace, open_db: Callable[[argparse.Namespace], QubeDb]) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"qubes-portfwd-agent[{args.qube}] %(levelname)s %(message)s",
    )
    agent = Agent(open_db(args), in_force=InForceRecord(args.runtime_dir))
    if args.once:
        outcome = asyncio.run(agent.apply_current())
        return 0 if outcome.ok else 1
    asyncio.run(_serve(agent))
    logging.getLogger("qubes_portfwd.agent").info("stopped")
    return 0
