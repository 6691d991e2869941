"""`python -m qubes_portfwd.agent --qube NAME --store DIR [--runtime-dir DIR] [--once]`."""

import argparse
import asyncio
import logging
import signal
import sys

from qubes_lab.entry_store import EntryStore

from .in_force import InForceRecord
from .service import Agent


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="qubes-portfwd-agent",
        description="Apply this qube's port forwarding and firewall entries with nftables.",
    )
    parser.add_argument("--qube", required=True, help="the qube this agent runs in (for logs)")
    parser.add_argument("--store", required=True, help="the qube's entry store directory")
    parser.add_argument(
        "--runtime-dir",
        help="where the hops in force are remembered across agent restarts (tmpfs, per qube)",
    )
    parser.add_argument("--once", action="store_true", help="apply the current entries and exit")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


async def _serve(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"qubes-portfwd-agent[{args.qube}] %(levelname)s %(message)s",
    )
    agent = Agent(EntryStore(args.store), in_force=InForceRecord(args.runtime_dir))
    if args.once:
        outcome = asyncio.run(agent.apply_current())
        return 0 if outcome.ok else 1
    asyncio.run(_serve(agent))
    logging.getLogger("qubes_portfwd.agent").info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
