"""`python -m qubes_lab.roots.firewall_worker --qube NAME --store DIR`: the emulated stock
qubes-firewall worker in a lab network qube, on the lab's stand-in for its QubesDB."""

import argparse
import asyncio
import logging
import signal
import sys

from ..qube_db import FileQubeDb
from ..qubes_firewall.worker import FirewallWorker


async def _serve(worker: FirewallWorker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await worker.run(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qubes-firewall (lab)", description=__doc__)
    parser.add_argument("--qube", required=True, help="the network qube it runs in (for logs)")
    parser.add_argument("--store", required=True, help="the qube's DB directory in the lab")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"qubes-firewall[{args.qube}] %(levelname)s %(message)s",
    )
    asyncio.run(_serve(FirewallWorker(FileQubeDb(args.store))))
    logging.getLogger("qubes_lab.qubes_firewall").info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
