"""qubes-lab-qubesd: the lab's emulated qubesd (Qubes' methods) hosting our controller."""

import argparse
import asyncio
import contextlib
import grp
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from qubes_lab.qube_db import FileQubeDb
from qubes_lab.qubes_firewall.dom0 import (
    FirewallEntriesWriter,
    FirewallHostState,
    expire_filter_rules,
)
from qubes_portfwd.controller.controller import Controller, boot_id_reader
from qubes_portfwd.controller.publisher import Publisher
from qubes_portfwd.controller.status_file import STATUS_FILE_NAME
from qubes_portfwd.defaults import DEFAULT_SOCKET
from qubes_portfwd.model.topology import Topology

from . import platform_hook
from .access import DEFAULT_ADMIN_GROUP
from .server import Server
from .store_watch import poke_on_changes
from .topology_json import topology_from_json

DEFAULT_STATE_DIR = "/var/lib/qubes-portfwd"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"

log = logging.getLogger("qubes-lab-qubesd")


def default_socket() -> str:
    return os.environ.get("QUBESD_SOCKET") or DEFAULT_SOCKET


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qubes-lab-qubesd", description=__doc__)
    parser.add_argument("--socket", default=None, help="Unix socket (default $QUBESD_SOCKET)")
    parser.add_argument("--state-dir", default=None, help="topology, firewall.xml files")
    parser.add_argument("--lab", metavar="NAME", help="take the lab's topology and entry stores")
    parser.add_argument("--topology", metavar="FILE", help="seed topology (JSON list of qubes)")
    parser.add_argument("--qubesdb-dir", metavar="DIR", help="entry stores, one dir per qube")
    parser.add_argument("--boot-id-file", default=BOOT_ID_FILE)
    parser.add_argument(
        "--status-file",
        default=None,
        help="the status document for dom0's tools (default: status.json beside the socket, "
        "/run/qubes-portfwd/status.json)",
    )
    parser.add_argument("--agent-timeout", type=float, default=5.0, help="seconds per hop level")
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=None,
        help="also re-plan on this timer (default: none; the stores and boot id are watched)",
    )
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument(
        "--admin-group",
        default=DEFAULT_ADMIN_GROUP,
        help="group (name or number) whose members may call besides root (default %(default)s)",
    )
    parser.add_argument(
        "--no-qube-sockets",
        action="store_true",
        help="no per-qube sockets (the network qubes' NAT traversal calls)",
    )
    parser.add_argument(
        "--on-netvm-change",
        metavar="COMMAND",
        help="run COMMAND QUBE after QUBE's netvm changed (an emulated host re-attaches it)",
    )
    parser.add_argument(
        "--on-netvm-change-timeout",
        type=float,
        default=platform_hook.DEFAULT_TIMEOUT,
        help="seconds COMMAND may take (default %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def lab_sources(name: str) -> tuple[Topology, Path]:
    """The lab's topology and state dir (the lab keeps its entry stores under qubesdb/)."""
    from qubes_lab.builder import Lab  # only the lab mode needs it

    lab = Lab(name)
    return lab.topology, Path(lab.state_dir)


def build_service(args: argparse.Namespace) -> tuple[Controller, Path, Path]:
    seed: Topology | None = None
    qubesdb_dir = Path(args.qubesdb_dir) if args.qubesdb_dir else None
    state_dir = Path(args.state_dir) if args.state_dir else None
    if args.lab:
        seed, lab_state = lab_sources(args.lab)
        qubesdb_dir = qubesdb_dir or lab_state / "qubesdb"
        state_dir = state_dir or lab_state / "admin"
    if args.topology:
        seed = topology_from_json(json.loads(Path(args.topology).read_bytes()))
    if qubesdb_dir is None:
        sys.exit("qubes-lab-qubesd: error: give --lab or --qubesdb-dir")
    state = FirewallHostState.open(state_dir or Path(DEFAULT_STATE_DIR), seed)
    stores_root = qubesdb_dir
    publisher = Publisher(lambda qube: FileQubeDb(stores_root / qube), args.agent_timeout)
    # Qubes' outbound firewall: core-admin writes it into the netvms' DBs, not our controller.
    state.writer = FirewallEntriesWriter(lambda qube: FileQubeDb(stores_root / qube))
    hook = None
    if args.on_netvm_change:
        try:
            hook = platform_hook.NetvmChangeHook.from_command(
                args.on_netvm_change, args.on_netvm_change_timeout
            )
        except ValueError as err:
            sys.exit(f"qubes-lab-qubesd: error: {err}")
    socket_path = Path(args.socket or default_socket())
    boot_id = boot_id_reader(Path(args.boot_id_file))
    state.clock, state.boot_id = time.time, boot_id
    service = Controller(
        state,
        publisher,
        boot_id,
        reconcile_interval=args.reconcile_interval,
        netvm_hook=hook,
        status_file=Path(args.status_file or socket_path.parent / STATUS_FILE_NAME),
    )
    return service, socket_path, stores_root


def admin_gid(untrusted_group: str) -> int | None:
    """The group's id; None (root only) when this host has no such group."""
    try:
        return grp.getgrnam(untrusted_group).gr_gid
    except KeyError:
        pass
    if untrusted_group.isdigit():
        return int(untrusted_group)
    log.warning("no group %r on this host: only root may use the socket", untrusted_group)
    return None


def qube_callers(service: Controller) -> list[str]:
    """The qubes that may run natd and so call dom0: every network qube."""
    return [q.name for q in service.topology.qubes.values() if q.provides_network]


async def start_qubes_duties(service: Controller) -> list[asyncio.Task[None]]:
    """What qubesd itself does beside our controller: at start, every running qube's outbound
    firewall into its netvm's DB; then core-admin's expiry timer for accept/drop rules."""
    state = service.state
    if not isinstance(state, FirewallHostState):
        return []
    async with service.lock:
        await asyncio.to_thread(state.reload_all)
    return [asyncio.create_task(expire_filter_rules(state, service.lock))]


async def start_tasks(
    service: Controller, stores_root: Path, boot_id_file: Path, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """What runs beside the socket until `stop`: qubesd's own duties, a first publish (a
    restart must bring every stored forward back), the reconciler and the watches poking it."""
    return [
        *await start_qubes_duties(service),
        asyncio.create_task(service.reconcile()),  # type: ignore[arg-type]
        asyncio.create_task(service.run_reconciler()),
        asyncio.create_task(
            poke_on_changes(
                service,
                lambda: [stores_root / qube for qube in sorted(service.topology.qubes)],
                [boot_id_file],
                stop,
            )
        ),
    ]


async def serve(
    service: Controller, socket_path: Path, stores_root: Path, args: argparse.Namespace
) -> None:
    server = Server(
        service,
        socket_path,
        args.request_timeout,
        admin_gid=admin_gid(args.admin_group),
        qubes=[] if args.no_qube_sockets else qube_callers(service),
    )
    await server.start()
    log.info("listening on %s", socket_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = await start_tasks(service, stores_root, Path(args.boot_id_file), stop)
    try:
        await stop.wait()
    finally:
        await server.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    service, socket_path, stores_root = build_service(args)
    asyncio.run(serve(service, socket_path, stores_root, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
