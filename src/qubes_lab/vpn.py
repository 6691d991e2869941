"""A real WireGuard tunnel between namespaces: wireguard-go with a private /run per namespace.

wireguard-go's control socket is always /run/wireguard/<if>.sock; each end runs (and `wg`
talks to it) with its own directory bound over /run, so ends in different namespaces never
share a socket. Stop it (by PID) before deleting its namespace: it keeps the namespace alive.
"""

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import netns, processes
from .outside import TUNNEL_PORT, OutsideAddresses

HANDSHAKE_TIMEOUT = 10.0
START_TIMEOUT = 5.0
KEEPALIVE = 25  # seconds; also makes the client end shake hands at once
ROLE_PREFIX = "wireguard-go:"  # the role of each end's process: this and its namespace
GUARD_TABLE = "inet qlab-vpn-guard"


@dataclass(frozen=True)
class TunnelEnd:
    netns: str
    ifname: str
    run_dir: Path

    @property
    def key_file(self) -> Path:
        return self.run_dir / f"{self.ifname}.key"

    @property
    def key_in_run(self) -> str:
        """The key file's path as the end sees it, with run_dir bound over /run."""
        return f"/run/{self.key_file.name}"


def _private_run(end: TunnelEnd, argv: Sequence[str]) -> list[str]:
    # sh's $0 is the directory, "$@" the command: no quoting of argv needed.
    script = 'mount --bind "$0" /run && exec "$@"'
    return ["sh", "-c", script, str(end.run_dir), *argv]


def wg(end: TunnelEnd, *args: str) -> str:
    """Run `wg` against this end's wireguard-go."""
    return netns.run_in(end.netns, _private_run(end, ["wg", *args]))


def _make_key(end: TunnelEnd) -> str:
    """Write a fresh private key into the end's run dir; return its public key."""
    end.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = netns.run(["wg", "genkey"]).strip()
    end.key_file.touch(mode=0o600)
    end.key_file.write_text(private + "\n")
    return subprocess.run(
        ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def _link_exists(end: TunnelEnd) -> bool:
    try:
        netns.run(["ip", "-n", end.netns, "link", "show", "dev", end.ifname])
    except netns.LabCommandError:
        return False
    return (end.run_dir / "wireguard" / f"{end.ifname}.sock").exists()


def start(end: TunnelEnd, log_dir: Path) -> processes.TrackedProcess:
    """Start wireguard-go for `end` and wait until its interface and socket exist."""
    end.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    process = processes.spawn(
        f"{ROLE_PREFIX}{end.netns}",
        end.netns,
        _private_run(end, ["wireguard-go", "-f", end.ifname]),
        log_dir / f"{end.netns}-wireguard-go.log",
    )
    processes.wait_until(lambda: _link_exists(end), START_TIMEOUT, f"{end.ifname} in {end.netns}")
    return process


@dataclass(frozen=True)
class TunnelClient:
    """One tunnel qube's end and its address inside the tunnel."""

    end: TunnelEnd
    address: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address  # the qube's netvm: the way to the provider's endpoint


def configure(provider: TunnelEnd, clients: Sequence[TunnelClient], a: OutsideAddresses) -> None:
    """Keys, peers, addresses and routes on both sides; returns once every peer shook hands."""
    provider_public = _make_key(provider)
    client_keys = [_make_key(client.end) for client in clients]
    peers: list[str] = []
    for client, public in zip(clients, client_keys, strict=True):
        peers += ["peer", public, "allowed-ips", f"{client.address}/32"]
    wg(
        provider,
        "set",
        provider.ifname,
        "private-key",
        provider.key_in_run,
        "listen-port",
        str(TUNNEL_PORT),
        *peers,
    )
    netns.ip_batch(
        provider.netns,
        [
            f"addr add {a.provider_tunnel4}/{a.tunnel_prefix4} dev {provider.ifname}",
            f"link set {provider.ifname} up",
        ],
    )
    for client in clients:
        end = client.end
        endpoint = f"{a.provider_public4}:{TUNNEL_PORT}"
        wg(
            end,
            "set",
            end.ifname,
            "private-key",
            end.key_in_run,
            "peer",
            provider_public,
            "endpoint",
            endpoint,
            "allowed-ips",
            "0.0.0.0/0",
        )
        netns.ip_batch(end.netns, client_routes(client, a))
        netns.nft_load(end.netns, leak_guard_ruleset(end.ifname))
        # Set last, with the link up: wireguard-go then sends the first handshake at once.
        wg(end, "set", end.ifname, "peer", provider_public, "persistent-keepalive", str(KEEPALIVE))
    processes.wait_until(
        lambda: _all_shook_hands(provider, len(clients)),
        HANDSHAKE_TIMEOUT,
        f"WireGuard handshakes at {provider.netns}",
    )


def client_routes(client: TunnelClient, a: OutsideAddresses) -> list[str]:
    """Everything into the tunnel but the endpoint; a blackhole if the tunnel disappears.

    The routes outside the tunnel survive its interface: `replace` lets a restart set them again.
    """
    ifname = client.end.ifname
    return [
        f"addr add {client.address}/32 dev {ifname}",
        f"link set {ifname} up",
        f"route replace {a.provider_public4}/32 via {client.gateway} dev eth0 onlink",
        f"route replace default dev {ifname}",
        "route replace blackhole default metric 4095",
    ]


def leak_guard_ruleset(ifname: str) -> str:
    """Downstream qubes' traffic may leave only by the tunnel (or to other downstream qubes).

    Replaces the table if present (a tunnel restart loads it again); "add" lets "delete" work.
    """
    return (
        f"add table {GUARD_TABLE}\n"
        f"delete table {GUARD_TABLE}\n"
        f"table {GUARD_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f'    iifgroup 2 oifgroup != 2 oifname != "{ifname}" counter drop\n'
        "  }\n"
        "}\n"
    )


def _all_shook_hands(provider: TunnelEnd, expected: int) -> bool:
    out = wg(provider, "show", provider.ifname, "latest-handshakes")
    stamps = [line.split()[1] for line in out.splitlines() if len(line.split()) == 2]
    return len(stamps) == expected and all(stamp != "0" for stamp in stamps)
