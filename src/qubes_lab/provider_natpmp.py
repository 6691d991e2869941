"""The lab VPN provider's own NAT-PMP responder: picks public ports, short leases, rotates.

Runs inside the lab's `provider` namespace, on its tunnel address, UDP 5351. It answers the
tunnel qubes (clients inside `--clients`), keeps the table of `provider_leases`, and mirrors it
into an nft table of its own (public address:port -> client:private port). SIGUSR1 moves
every live mapping to a new public port, as providers do now and then; the client learns the
new port at its next renewal.

    python -m qubes_lab.provider_natpmp --listen 100.64.0.1 --public 203.0.113.2 \\
        --clients 100.64.0.0/24 [--lease 60] [--ports 40000-49999] [--ready FILE]
"""

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.ports import PortRange, parse_port_range
from qubes_portfwd.natpmp import wire

from . import netns, processes, state
from .provider_leases import ProviderTable, dnat_ruleset, handle_mapping, rotated

if TYPE_CHECKING:
    from .builder import Lab

ROLE = "provider-natpmp"
NFT_TABLE = "qlab-provider-natpmp"
DEFAULT_LEASE = 60  # seconds, as commercial VPN providers grant
DEFAULT_PORTS = "40000-49999"
EXPIRY_TICK = 0.25
READY_TIMEOUT = 5.0
NFT_TIMEOUT = 10.0

log = logging.getLogger(__name__)


def choose_random_port(ports: PortRange, in_use: frozenset[int]) -> int | None:
    """A random free port of `ports` (bounded tries, then a scan); None when all are taken."""
    for _ in range(32):
        port = ports.first + secrets.randbelow(len(ports))
        if port not in in_use:
            return port
    return next((p for p in range(ports.first, ports.last + 1) if p not in in_use), None)


def nft_load(script: str) -> bool:
    """Load one nft transaction in this process's namespace; False (logged) if refused."""
    done = subprocess.run(
        ["nft", "-f", "-"], input=script, text=True, capture_output=True, timeout=NFT_TIMEOUT
    )
    if done.returncode != 0:
        log.error("nft: %s", done.stderr.strip())
        return False
    return True


class ProviderResponder(asyncio.DatagramProtocol):
    def __init__(
        self,
        public: ipaddress.IPv4Address,
        clients: ipaddress.IPv4Network,
        table: ProviderTable,
        ifname: str,
        clock: Callable[[], float] = time.monotonic,
        load_rules: Callable[[str], bool] | None = None,
    ) -> None:
        self.public = public
        self.clients = clients
        self.table = table
        self.ifname = ifname
        self.clock = clock
        self.load_rules = load_rules or nft_load
        self.started = clock()
        self.transport: asyncio.DatagramTransport | None = None
        self._applied: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    @property
    def epoch(self) -> int:
        return int(self.clock() - self.started)

    def apply(self) -> bool:
        """Mirror the table into nft (only when it changed); False if nft refused."""
        script = dnat_ruleset(NFT_TABLE, self.ifname, self.public, self.table.grants)
        if script == self._applied:
            return True
        if not self.load_rules(script):
            return False
        self._applied = script
        return True

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        response = self.answer(data, ipaddress.IPv4Address(addr[0]))
        if response is not None and self.transport is not None:
            self.transport.sendto(wire.encode_response(response), addr)

    def answer(self, untrusted_data: bytes, client: ipaddress.IPv4Address) -> wire.Response | None:
        try:
            request = wire.parse_request(untrusted_data)
        except wire.RequestError as err:
            log.info("%s: %s", client, err)
            if err.reply_result is None:
                return None
            return wire.ErrorResponse(err.opcode, err.reply_result, self.epoch)
        if isinstance(request, wire.ExternalAddressRequest):
            return wire.ExternalAddressResponse(self.epoch, self.public)
        opcode = wire.opcode_for(request.protocol)
        if client not in self.clients:
            return wire.ErrorResponse(opcode, wire.ResultCode.NOT_AUTHORIZED, self.epoch)
        before = self.table
        self.table, response = handle_mapping(
            self.table, client, request, self.clock(), self.epoch, choose_random_port
        )
        if not self.apply():
            self.table = before
            return wire.ErrorResponse(opcode, wire.ResultCode.NETWORK_FAILURE, self.epoch)
        log.info("%s %s/%d -> %s", client, request.protocol, request.internal_port, response)
        return response

    def rotate(self) -> None:
        before = self.table
        self.table = rotated(self.table, self.clock(), choose_random_port)
        if not self.apply():
            self.table = before
            return
        for key, grant in sorted(self.table.grants.items()):
            log.info(
                "rotated %s %s/%d to public port %d",
                key.client,
                key.proto,
                key.internal_port,
                grant.public_port,
            )

    def expire(self) -> None:
        expired = self.table.expired(self.clock())
        if expired != self.table:
            self.table = expired
            self.apply()


async def serve(args: argparse.Namespace) -> None:
    table = ProviderTable({}, args.ports, args.lease)
    responder = ProviderResponder(args.public, args.clients, table, args.ifname)
    if not responder.apply():
        raise SystemExit("nft refused the provider's DNAT table")
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: responder, local_addr=(str(args.listen), wire.NATPMP_PORT)
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, responder.rotate)
    if args.ready is not None:
        Path(args.ready).write_text("ready\n")
    log.info("answering on %s:%d, leases of %d s", args.listen, wire.NATPMP_PORT, args.lease)
    while not stop.is_set():
        responder.expire()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EXPIRY_TICK)
    subprocess.run(["nft", "delete", "table", "ip", NFT_TABLE], capture_output=True, timeout=10)


def _ports(untrusted_value: str) -> PortRange:
    try:
        return parse_port_range("ports", untrusted_value)
    except ValidationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qubes_lab.provider_natpmp")
    parser.add_argument("--listen", required=True, type=ipaddress.IPv4Address)
    parser.add_argument("--public", required=True, type=ipaddress.IPv4Address)
    parser.add_argument("--clients", required=True, type=ipaddress.IPv4Network)
    parser.add_argument("--ifname", default="eth0", help="where the internet comes in")
    parser.add_argument("--lease", type=int, default=DEFAULT_LEASE)
    parser.add_argument("--ports", type=_ports, default=_ports(DEFAULT_PORTS))
    parser.add_argument("--ready", help="file written once the responder answers")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s provider-natpmp %(message)s")
    asyncio.run(serve(parse_args(argv)))


# -- running it in a lab --------------------------------------------------------------


def start(lab: "Lab", lease: int = DEFAULT_LEASE) -> processes.TrackedProcess:
    """Start the responder in the lab's provider namespace; `lab.down()` stops it."""
    a = lab.addresses
    run_dir = lab.state_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    ready = run_dir / f"{ROLE}.ready"
    ready.unlink(missing_ok=True)
    clients = ipaddress.IPv4Network(f"{a.provider_tunnel4}/{a.tunnel_prefix4}", strict=False)
    argv = [sys.executable, "-m", "qubes_lab.provider_natpmp"]
    argv += ["--listen", str(a.provider_tunnel4), "--public", str(a.provider_public4)]
    argv += ["--clients", str(clients), "--lease", str(lease), "--ready", str(ready)]
    process = _track(lab, ROLE, argv)

    def answering() -> bool:
        if not processes.is_running(process):
            raise netns.LabCommandError(f"{ROLE} exited; see {process.log}")
        return ready.exists()

    processes.wait_until(answering, READY_TIMEOUT, "provider NAT-PMP responder")
    return process


def rotate(lab: "Lab") -> None:
    """Tell the responder to move every mapping to a new public port."""
    process = _require(lab, ROLE)
    if not processes.is_running(process):
        raise netns.LabCommandError(f"{ROLE} is not running")
    os.kill(process.pid, signal.SIGUSR1)


def stop(lab: "Lab") -> None:
    _untrack(lab, ROLE)


def _track(lab: "Lab", role: str, argv: list[str]) -> processes.TrackedProcess:
    log_path = lab.state_dir / "logs" / f"{role}.log"
    process = processes.spawn(role, lab.netns("provider"), argv, log_path)
    current = state.load(lab.state_dir)
    assert current is not None, "the lab is not up"
    state.save(lab.state_dir, current.with_process(process))
    return process


def _require(lab: "Lab", role: str) -> processes.TrackedProcess:
    current = state.load(lab.state_dir)
    process = None if current is None else current.process(role)
    if process is None:
        raise netns.LabCommandError(f"{role} was not started in lab {lab.name}")
    return process


def _untrack(lab: "Lab", role: str) -> None:
    current = state.load(lab.state_dir)
    process = None if current is None else current.process(role)
    if current is not None and process is not None:
        processes.stop(process)
        state.save(lab.state_dir, current.without_process(process))


if __name__ == "__main__":
    main()
