"""qubes-portfwd-natd: NAT-PMP, PCP and UPnP IGD for the qubes behind this network qube.

Given the qube's DB by its composition root (the product's `__main__` opens QubesDB, the
lab's `qubes_lab.roots.natd` the lab's stand-in). Listens only on the qube's downstream
gateway address (its own address on the vifs), and for PCP on its IPv6 one where it has
IPv6, and lets only the vifs in. Every mapping is
decided by dom0 through the admin service.
"""

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from ..natpmp.wire import NATPMP_PORT
from ..ports.nat_channel import NatChannel
from ..ports.qube_db import QubeDb
from . import http_server, input_rules, ssdp
from .dom0 import THREAD_PREFIX as DOM0_THREADS
from .dom0 import Dom0
from .mappings import MappingTable
from .port_control import PortControlServer
from .upnp_actions import WanIpConnection
from .upnp_soap import DESCRIPTION_PATH

DEFAULT_HTTP_PORT = 2869
GATEWAY_KEY = "/qubes-netvm-gateway"
GATEWAY6_KEY = "/qubes-netvm-gateway6"  # set by Qubes when the qube has the ipv6 feature
IP_FREEBIND = 15  # linux/in.h; also binds IPv6 sockets (not in Python's socket module)

log = logging.getLogger("qubes-portfwd-natd")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qubes-portfwd-natd", description=__doc__)
    parser.add_argument("--qube", required=True, help="this network qube's name")
    parser.add_argument("--listen", default=None, help="override the downstream gateway address")
    parser.add_argument(
        "--listen6", default=None, help="override the downstream IPv6 gateway address (PCP)"
    )
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    parser.add_argument("--ready", default=None, help="file to create once serving")
    parser.add_argument("--no-input-rules", action="store_true", help="leave nftables alone")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def gateway_address(args: argparse.Namespace, db: QubeDb) -> ipaddress.IPv4Address:
    if args.listen:
        return ipaddress.IPv4Address(args.listen)
    untrusted_value = (db.read(GATEWAY_KEY) or b"").decode("ascii", errors="replace")
    try:
        return ipaddress.IPv4Address(untrusted_value)
    except ValueError:
        sys.exit(f"qubes-portfwd-natd: the qube's DB has no {GATEWAY_KEY}: not a network qube?")


def gateway6_address(args: argparse.Namespace, db: QubeDb) -> ipaddress.IPv6Address | None:
    """The qube's IPv6 address on the vifs; None when it has no IPv6 (then IPv4 only)."""
    if args.listen6:
        return ipaddress.IPv6Address(args.listen6)
    untrusted_value = (db.read(GATEWAY6_KEY) or b"").decode("ascii", errors="replace")
    try:
        return ipaddress.IPv6Address(untrusted_value) if untrusted_value else None
    except ValueError:
        log.warning("%s is not an IPv6 address: PCP over IPv6 not served", GATEWAY6_KEY)
        return None


def freebind_udp6(address: ipaddress.IPv6Address, port: int) -> socket.socket:
    """A UDP socket on `address` whether or not a vif holds it yet: Qubes adds the IPv6
    gateway to each vif as it comes up, with duplicate address detection (tentative first)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(address), port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(args: argparse.Namespace, db: QubeDb, channel: NatChannel) -> None:
    loop = asyncio.get_running_loop()
    gateway = str(gateway_address(args, db))
    gateway6 = gateway6_address(args, db)
    dom0 = Dom0(channel)
    table = MappingTable()
    device_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{args.qube}.qubes-portfwd-natd"))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: PortControlServer(dom0.ask, dom0.address, table), local_addr=(gateway, NATPMP_PORT)
    )
    transports = [transport]
    if gateway6 is not None:
        transport6, _ = await loop.create_datagram_endpoint(
            lambda: PortControlServer(dom0.ask, dom0.address, table),
            sock=freebind_udp6(gateway6, NATPMP_PORT),
        )
        transports.append(transport6)
    families = (4, 6) if gateway6 is not None else (4,)
    actions = WanIpConnection(dom0.ask, dom0.address, table)
    http, http_port = await http_server.start(actions, gateway, args.http_port, device_uuid)
    location = f"http://{gateway}:{http_port}{DESCRIPTION_PATH}"
    ssdp_transport = None
    vifs = ssdp.downstream_interfaces()
    if vifs:
        ssdp_transport, _ = await loop.create_datagram_endpoint(
            lambda: ssdp.SsdpResponder(location, device_uuid),
            sock=ssdp.multicast_socket(vifs),
        )
    stop = asyncio.Event()
    keeper = None
    if not args.no_input_rules:
        udp_ports, tcp_ports = [NATPMP_PORT, ssdp.SSDP_PORT], [http_port]
        try:
            await asyncio.to_thread(input_rules.open_ports, udp_ports, tcp_ports, families)
        except input_rules.NftError as err:  # Qubes' rules not loaded yet: the keeper waits
            log.warning("input rules not opened yet: %s", err)
        keeper = asyncio.create_task(input_rules.keep_open(udp_ports, tcp_ports, stop, families))
    log.info(
        "serving on %s (NAT-PMP/PCP %d%s, UPnP %s, SSDP on %s)",
        gateway,
        NATPMP_PORT,
        f", PCP on {gateway6}" if gateway6 is not None else "",
        location,
        ",".join(vifs) or "-",
    )
    if args.ready:
        Path(args.ready).write_text(f"{location}\n")
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        for each in transports:
            each.close()
        if ssdp_transport is not None:
            ssdp_transport.close()
        http.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http.wait_closed(), 2.0)
        dom0.close()
        if not args.no_input_rules:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(input_rules.close_ports, families)


def run(
    args: argparse.Namespace,
    open_db: Callable[[argparse.Namespace], QubeDb],
    open_channel: Callable[[argparse.Namespace], NatChannel],
) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(serve(args, open_db(args), open_channel(args)))
    if any(t.name.startswith(DOM0_THREADS) and t.is_alive() for t in threading.enumerate()):
        # A call to dom0 still waiting for the user's answer holds a worker thread that the
        # interpreter would join at exit, for up to the ask's timeout; our cleanup is done.
        logging.shutdown()
        os._exit(0)
    return 0
