"""Debian's miniupnpd in the lab: the VPN provider's NAT-PMP server (a real peer with fixed
ports), and a gateway in a network qube to compare natd with (`start_gateway`).

miniupnpd refuses to forward when its outside address is in a reserved range, and the lab's
provider address (203.0.113.2) is one; so it is told a public address of its own
(`MINIUPNPD_PUBLIC4`, outside miniupnpd's reserved list) which exists only inside the lab:
added to the provider's outside interface and routed to it by the lab's router. miniupnpd's
DNAT matches the interface and port only, so traffic to that address reaches the tunnel.
It runs with a private /tmp and its own nft table, both removed by `stop`.
"""

import contextlib
import ipaddress
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from . import netns, processes, state
from .outside import LAN, PROVIDER

if TYPE_CHECKING:
    from .builder import Lab
    from .outside import OutsideAddresses

ROLE = "provider-miniupnpd"
MINIUPNPD = "/usr/sbin/miniupnpd"
NFT_TABLE = "qlab-miniupnpd"
# Next to TEST-NET-2 but not in it: miniupnpd accepts it; it never leaves the lab's namespaces.
MINIUPNPD_PUBLIC4 = ipaddress.IPv4Address("198.51.101.2")
PROVIDER_OUTSIDE_IF = "eth0"
LAN_TO_PROVIDER_IF = "prov0"
READY_TIMEOUT = 5.0
LISTEN_LOG_LINE = "Listening for NAT-PMP"


def nft_tables() -> str:
    """The chains miniupnpd fills; forward policy accept: the provider forwards everything."""
    return f"""table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    jump miniupnpd
  }}
  chain miniupnpd {{
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
}}
"""


def config(a: "OutsideAddresses", lease_file: Path) -> str:
    tunnel = ipaddress.IPv4Network(f"{a.provider_tunnel4}/{a.tunnel_prefix4}", strict=False)
    # A netmask wider than /32, or every client is "not from a LAN".
    listening = f"{a.provider_tunnel4}/{a.tunnel_prefix4}"
    return _config(PROVIDER_OUTSIDE_IF, listening, str(tunnel), lease_file)


def _config(ext_if: str, listening: str, allowed: str, lease_file: Path) -> str:
    # A denied request makes miniupnpd search every port for ~80 s: allow the whole range
    # to the clients, deny everyone else.
    return "\n".join(
        [
            f"ext_ifname={ext_if}",
            f"ext_ip={MINIUPNPD_PUBLIC4}",
            f"listening_ip={listening}",
            "enable_natpmp=yes",
            "enable_upnp=no",
            "secure_mode=yes",
            "system_uptime=no",
            f"upnp_table_name={NFT_TABLE}",
            f"upnp_nat_table_name={NFT_TABLE}",
            "upnp_forward_chain=miniupnpd",
            "upnp_nat_chain=prerouting_miniupnpd",
            "upnp_nat_postrouting_chain=postrouting_miniupnpd",
            f"lease_file={lease_file}",
            f"uuid={uuid.uuid4()}",
            f"allow 1-65535 {allowed} 1-65535",
            "deny 0-65535 0.0.0.0/0 0-65535",
            "",
        ]
    )


def _public_commands(a: "OutsideAddresses", verb: str) -> tuple[list[str], list[str]]:
    provider = [f"addr {verb} {MINIUPNPD_PUBLIC4}/32 dev {PROVIDER_OUTSIDE_IF}"]
    lan = [f"route {verb} {MINIUPNPD_PUBLIC4}/32 via {a.provider_public4} dev {LAN_TO_PROVIDER_IF}"]
    return provider, lan


def start(lab: "Lab") -> processes.TrackedProcess:
    """Start miniupnpd in the provider namespace; `stop` (or `lab.down()`) ends it."""
    a = lab.addresses
    run_dir = lab.state_dir / "run" / "miniupnpd"
    tmp_dir = run_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = run_dir / "miniupnpd.conf"
    conf.write_text(config(a, run_dir / "leases"))
    provider_ns, lan_ns = lab.netns(PROVIDER), lab.netns(LAN)
    netns.nft_load(provider_ns, nft_tables())
    provider_cmds, lan_cmds = _public_commands(a, "add")
    netns.ip_batch(provider_ns, provider_cmds)
    netns.ip_batch(lan_ns, lan_cmds)
    return _spawn_listening(lab, ROLE, provider_ns, run_dir, "miniupnpd")


def _spawn_listening(
    lab: "Lab", role: str, namespace: str, run_dir: Path, what: str
) -> processes.TrackedProcess:
    """miniupnpd with `run_dir`'s configuration and a private /tmp, recorded, once it listens."""
    script = 'mount --bind "$0" /tmp && exec "$@"'
    argv = ["sh", "-c", script, str(run_dir / "tmp"), MINIUPNPD, "-d"]
    argv += ["-f", str(run_dir / "miniupnpd.conf"), "-P", str(run_dir / "miniupnpd.pid")]
    log_path = lab.state_dir / "logs" / f"{role.replace(':', '-')}.log"
    log_path.unlink(missing_ok=True)  # "listening" is read from this run's log only
    process = processes.spawn(role, namespace, argv, log_path)
    current = state.load(lab.state_dir)
    assert current is not None, "the lab is not up"
    state.save(lab.state_dir, current.with_process(process))

    def listening() -> bool:
        if not processes.is_running(process):
            raise netns.LabCommandError(f"{what} exited; see {log_path}")
        return LISTEN_LOG_LINE in log_path.read_text(errors="replace")

    processes.wait_until(listening, READY_TIMEOUT, what)
    return process


def stop(lab: "Lab") -> None:
    """Stop miniupnpd and remove what it and `start` left (its rules survive its exit)."""
    current = state.load(lab.state_dir)
    process = None if current is None else current.process(ROLE)
    if current is not None and process is not None:
        processes.stop(process)
        state.save(lab.state_dir, current.without_process(process))
    provider_ns, lan_ns = lab.netns(PROVIDER), lab.netns(LAN)
    provider_cmds, lan_cmds = _public_commands(lab.addresses, "del")
    for namespace, commands in ((provider_ns, provider_cmds), (lan_ns, lan_cmds)):
        with contextlib.suppress(netns.LabCommandError):  # already gone
            netns.ip_batch(namespace, commands)
    with contextlib.suppress(netns.LabCommandError):
        netns.run_in(provider_ns, ["nft", "delete", "table", "inet", NFT_TABLE])


# -- miniupnpd as a network qube's gateway (for the side-by-side latency benchmark) ---------

GATEWAY_COMMENT = "qlab-miniupnpd"  # marks the rules `start_gateway` adds in Qubes' chains


def gateway_role(qube: str) -> str:
    return f"miniupnpd:{qube}"


def _gateway_openings(service_port: int) -> dict[str, list[str]]:
    """What Qubes' default deny must let through for miniupnpd's mappings, per chain.

    miniupnpd writes its DNAT and forward accepts in its own table; Qubes' `qubes` tables
    drop the same packets unless their custom chains accept them (nftables: every base
    chain must accept). The client qube's input for `service_port` is opened separately.
    """
    tag = f'comment "{GATEWAY_COMMENT}"'
    return {
        "custom-input": [f"iifgroup 2 udp dport 5351 accept {tag}"],
        "custom-forward": [f"iifgroup 1 oifgroup 2 ct state new ct status dnat accept {tag}"],
        "client-input": [f"tcp dport {service_port} ct state new accept {tag}"],
    }


def start_gateway(
    lab: "Lab", qube: str, client: str, service_port: int
) -> processes.TrackedProcess:
    """miniupnpd in network qube `qube` for its downstream `client` only, outside side eth0.

    Opens in Qubes' chains exactly what its mappings need (see `_gateway_openings`) and
    `client`'s input for `service_port`; `stop_gateway` removes all of it.
    """
    address = lab.topology[qube].address4
    client_address = lab.topology[client].address4
    run_dir = lab.state_dir / "run" / f"miniupnpd-{qube}"
    tmp_dir = run_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = run_dir / "miniupnpd.conf"
    # The qube's address is /32 on each vif; a /24 makes its clients "from the LAN".
    conf.write_text(_config("eth0", f"{address}/24", f"{client_address}/32", run_dir / "leases"))
    qube_ns, client_ns = lab.netns(qube), lab.netns(client)
    openings = _gateway_openings(service_port)
    rules = [
        f"add rule ip qubes {chain} {rule}"
        for chain in ("custom-input", "custom-forward")
        for rule in openings[chain]
    ]
    netns.nft_load(qube_ns, nft_tables() + "\n".join(rules) + "\n")
    netns.nft_load(client_ns, f"add rule ip qubes custom-input {openings['client-input'][0]}\n")
    return _spawn_listening(lab, gateway_role(qube), qube_ns, run_dir, f"miniupnpd in {qube}")


def restart_gateway(lab: "Lab", qube: str) -> processes.TrackedProcess:
    """`qube`'s miniupnpd again, with the configuration and openings `start_gateway` made."""
    role = gateway_role(qube)
    current = state.load(lab.state_dir)
    process = None if current is None else current.process(role)
    if current is not None and process is not None:
        processes.stop(process)
        state.save(lab.state_dir, current.without_process(process))
    run_dir = lab.state_dir / "run" / f"miniupnpd-{qube}"
    if not (run_dir / "miniupnpd.conf").exists():
        raise netns.LabCommandError(f"{role}: no configuration; start it with start_gateway")
    return _spawn_listening(lab, role, lab.netns(qube), run_dir, f"miniupnpd in {qube}")


def stop_gateway(lab: "Lab", qube: str, client: str) -> None:
    """Stop `qube`'s miniupnpd; remove its table and every rule `start_gateway` added."""
    current = state.load(lab.state_dir)
    process = None if current is None else current.process(gateway_role(qube))
    if current is not None and process is not None:
        processes.stop(process)
        state.save(lab.state_dir, current.without_process(process))
    for host, chains in ((qube, ("custom-input", "custom-forward")), (client, ("custom-input",))):
        _delete_tagged(lab.netns(host), chains)
    with contextlib.suppress(netns.LabCommandError):
        netns.run_in(lab.netns(qube), ["nft", "delete", "table", "inet", NFT_TABLE])


def _delete_tagged(namespace: str, chains: tuple[str, ...]) -> None:
    for chain in chains:
        with contextlib.suppress(netns.LabCommandError):
            listing = netns.run_in(namespace, ["nft", "-a", "list", "chain", "ip", "qubes", chain])
            for line in listing.splitlines():
                if f'comment "{GATEWAY_COMMENT}"' in line and "# handle " in line:
                    handle = line.rsplit("# handle ", 1)[1].strip()
                    netns.run_in(
                        namespace, ["nft", "delete", "rule", "ip", "qubes", chain, "handle", handle]
                    )
