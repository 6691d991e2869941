"""Open the daemon's ports to downstream qubes only, in Qubes' `custom-input`.

Qubes' input chain drops everything not accepted; an accept must come from `qubes`' own
`custom-input`. Ours sits in a chain of its own, jumped to from there, and matches only
interface group 2 (the vifs), so the uplink side never reaches the daemon.
"""

import json
import subprocess

CHAIN = "natd-input"
JUMP_COMMENT = "qubes-portfwd-natd"
NFT_TIMEOUT = 10.0


def _nft(script: str) -> None:
    subprocess.run(
        ["nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        timeout=NFT_TIMEOUT,
        capture_output=True,
    )


def _jump_handles() -> list[int]:
    listing = subprocess.run(
        ["nft", "-j", "list", "chain", "ip", "qubes", "custom-input"],
        text=True,
        check=True,
        timeout=NFT_TIMEOUT,
        capture_output=True,
    ).stdout
    handles = []
    for item in json.loads(listing).get("nftables", []):
        rule = item.get("rule")
        if isinstance(rule, dict) and rule.get("comment") == JUMP_COMMENT:
            handles.append(int(rule["handle"]))
    return handles


def open_ports(udp_ports: list[int], tcp_ports: list[int]) -> None:
    """Idempotent: the chain is rewritten, the jump added only when missing."""
    udp = ", ".join(str(p) for p in udp_ports)
    tcp = ", ".join(str(p) for p in tcp_ports)
    script = (
        f"add chain ip qubes {CHAIN}\n"
        f"flush chain ip qubes {CHAIN}\n"
        f"add rule ip qubes {CHAIN} iifgroup 2 udp dport {{ {udp} }} accept\n"
        f"add rule ip qubes {CHAIN} iifgroup 2 tcp dport {{ {tcp} }} accept\n"
    )
    if not _jump_handles():
        script += f'add rule ip qubes custom-input jump {CHAIN} comment "{JUMP_COMMENT}"\n'
    _nft(script)


def close_ports() -> None:
    script = "".join(f"delete rule ip qubes custom-input handle {h}\n" for h in _jump_handles())
    _nft(script + f"delete chain ip qubes {CHAIN}\n")
