"""`python -m qubes_portfwd.tunnel --qube NAME --store DIR --gateway ADDR`: the lease keeper."""

import argparse
import asyncio
import ipaddress
import logging
import signal

from qubes_lab.entry_store import EntryStore

from ..natpmp import wire
from .keeper import LeaseKeeper
from .natpmp_client import NatPmpClient


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qubes_portfwd.tunnel", description=__doc__)
    parser.add_argument("--qube", required=True, help="the tunnel qube this keeper runs in")
    parser.add_argument("--store", required=True, help="the qube's entry store directory")
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
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = NatPmpClient(args.gateway, args.port)
    await client.open()
    try:
        keeper = LeaseKeeper(EntryStore(args.store), client, args.lifetime)
        await keeper.run(stop)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s tunnel[{args.qube}] %(levelname)s %(message)s"
    )
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
