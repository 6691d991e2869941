"""The VPN qube's lease keeper program, given the qube's DB by its composition root (the
product's `__main__` opens QubesDB, the lab's `qubes_lab.roots.tunnel` the lab's stand-in)."""

import argparse
import asyncio
import ipaddress
import logging
import signal
from collections.abc import Callable

from ..natpmp import wire
from ..ports.qube_db import QubeDb
from .keeper import LeaseKeeper
from .natpmp_client import NatPmpClient


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qubes_portfwd.tunnel", description=__doc__)
    parser.add_argument("--qube", required=True, help="the tunnel qube this keeper runs in")
    parser.add_argument(
        "--gateway",
        required=True,
        type=ipaddress.IPv4Address,
        help="the provider's NAT-PMP gateway",
    )
    parser.add_argument("--port", type=int, default=wire.NATPMP_PORT, help=argparse.SUPPRESS)
    parser.add_argument(
        "--lifetime",
        type=int,
        default=wire.RECOMMENDED_LIFETIME,
        help="lifetime to ask for, seconds (the provider may grant less)",
    )
    return parser


async def serve(args: argparse.Namespace, db: QubeDb) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = NatPmpClient(args.gateway, args.port)
    await client.open()
    try:
        keeper = LeaseKeeper(db, client, args.lifetime)
        await keeper.run(stop)
    finally:
        client.close()


def run(args: argparse.Namespace, open_db: Callable[[argparse.Namespace], QubeDb]) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s tunnel[{args.qube}] %(levelname)s %(message)s"
    )
    asyncio.run(serve(args, open_db(args)))
