"""Debian's miniupnpd as the lab VPN provider's NAT-PMP server: a real peer with fixed ports.

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
    # A denied request makes miniupnpd search every port for ~80 s: allow the whole range
    # to the tunnel clients, deny everyone else.
    return "\n".join(
        [
            f"ext_ifname={PROVIDER_OUTSIDE_IF}",
            f"ext_ip={MINIUPNPD_PUBLIC4}",
            # A netmask wider than /32, or every client is "not from a LAN".
            f"listening_ip={a.provider_tunnel4}/{a.tunnel_prefix4}",
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
            f"allow 1-65535 {tunnel} 1-65535",
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
    script = 'mount --bind "$0" /tmp && exec "$@"'
    argv = ["sh", "-c", script, str(tmp_dir), MINIUPNPD, "-d", "-f", str(conf)]
    argv += ["-P", str(run_dir / "miniupnpd.pid")]
    log_path = lab.state_dir / "logs" / f"{ROLE}.log"
    log_path.unlink(missing_ok=True)
    process = processes.spawn(ROLE, provider_ns, argv, log_path)
    current = state.load(lab.state_dir)
    assert current is not None, "the lab is not up"
    state.save(lab.state_dir, current.with_process(process))

    def listening() -> bool:
        if not processes.is_running(process):
            raise netns.LabCommandError(f"miniupnpd exited; see {log_path}")
        return LISTEN_LOG_LINE in log_path.read_text(errors="replace")

    processes.wait_until(listening, READY_TIMEOUT, "miniupnpd")
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
