"""Open the daemon's ports to downstream qubes only, in Qubes' `custom-input`, and keep them.

Qubes' input chain drops everything not accepted; an accept must come from `qubes`' own
`custom-input`. Ours sits in a chain of its own, jumped to from there, and matches only
interface group 2 (the vifs), so the uplink side never reaches the daemon. A reload of
Qubes' base rules deletes the `qubes` tables; `keep_open` puts ours back when a table goes
(`nft monitor destroy tables`: only those events, so busy rulesets cost it nothing) and, for
anything else, on a slow timer.
"""

import asyncio
import contextlib
import json
import logging
import subprocess
from typing import Any

CHAIN = "natd-input"
JUMP_COMMENT = "qubes-portfwd-natd"
NFT_TIMEOUT = 10.0
FALLBACK_CHECK = 5.0  # seconds: a check even when `nft monitor` is silent or gone
SETTLE = 0.05  # a reload deletes several tables: wait this long for the rest before checking
MONITOR_CHUNK = 65536

log = logging.getLogger("qubes-portfwd-natd")


def _nft(script: str) -> None:
    subprocess.run(
        ["nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        timeout=NFT_TIMEOUT,
        capture_output=True,
    )


def _chain_rules(chain: str) -> list[dict[str, Any]]:
    """The rules of `ip qubes <chain>`; empty when the chain (or the table) is missing."""
    listing = subprocess.run(
        ["nft", "-j", "list", "chain", "ip", "qubes", chain],
        text=True,
        check=False,
        timeout=NFT_TIMEOUT,
        capture_output=True,
    )
    if listing.returncode != 0:
        return []
    untrusted_items = json.loads(listing.stdout).get("nftables", [])
    return [i["rule"] for i in untrusted_items if isinstance(i.get("rule"), dict)]


def _jump_handles() -> list[int]:
    return [
        int(rule["handle"])
        for rule in _chain_rules("custom-input")
        if rule.get("comment") == JUMP_COMMENT
    ]


def _script(udp_ports: list[int], tcp_ports: list[int], add_jump: bool) -> str:
    udp = ", ".join(str(p) for p in udp_ports)
    tcp = ", ".join(str(p) for p in tcp_ports)
    script = (
        f"add chain ip qubes {CHAIN}\n"
        f"flush chain ip qubes {CHAIN}\n"
        f"add rule ip qubes {CHAIN} iifgroup 2 udp dport {{ {udp} }} accept\n"
        f"add rule ip qubes {CHAIN} iifgroup 2 tcp dport {{ {tcp} }} accept\n"
    )
    if add_jump:
        script += f'add rule ip qubes custom-input jump {CHAIN} comment "{JUMP_COMMENT}"\n'
    return script


def open_ports(udp_ports: list[int], tcp_ports: list[int]) -> None:
    """Idempotent: the chain is rewritten, the jump added only when missing."""
    _nft(_script(udp_ports, tcp_ports, add_jump=not _jump_handles()))


def ensure_open(udp_ports: list[int], tcp_ports: list[int]) -> bool:
    """Put the rules back if anything of them is missing; whether it had to."""
    jumps = _jump_handles()
    if len(jumps) == 1 and len(_chain_rules(CHAIN)) == 2:
        return False
    script = "".join(f"delete rule ip qubes custom-input handle {h}\n" for h in jumps[1:])
    _nft(script + _script(udp_ports, tcp_ports, add_jump=not jumps))
    return True


def close_ports() -> None:
    script = "".join(f"delete rule ip qubes custom-input handle {h}\n" for h in _jump_handles())
    _nft(script + f"delete chain ip qubes {CHAIN}\n")


async def keep_open(udp_ports: list[int], tcp_ports: list[int], stop: asyncio.Event) -> None:
    """Until `stop`: after any table is deleted (`nft monitor`), and every FALLBACK_CHECK."""
    while not stop.is_set():
        try:
            monitor = await asyncio.create_subprocess_exec(
                "nft",
                "monitor",
                "destroy",
                "tables",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as err:
            log.error("cannot start nft monitor: %s; checking on the timer only", err)
        else:
            try:
                await _follow(monitor, udp_ports, tcp_ports, stop)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    monitor.kill()
                await monitor.wait()
        await _check(udp_ports, tcp_ports)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FALLBACK_CHECK)


async def _follow(
    monitor: asyncio.subprocess.Process,
    udp_ports: list[int],
    tcp_ports: list[int],
    stop: asyncio.Event,
) -> None:
    """Check after each burst of table deletions, or after FALLBACK_CHECK of silence."""
    assert monitor.stdout is not None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            if not await asyncio.wait_for(monitor.stdout.read(MONITOR_CHUNK), FALLBACK_CHECK):
                return  # the monitor ended; the caller checks and starts another
            with contextlib.suppress(TimeoutError):
                while await asyncio.wait_for(monitor.stdout.read(MONITOR_CHUNK), SETTLE):
                    pass
        await _check(udp_ports, tcp_ports)


async def _check(udp_ports: list[int], tcp_ports: list[int]) -> None:
    try:
        if await asyncio.to_thread(ensure_open, udp_ports, tcp_ports):
            log.warning("input rules were gone (base rules reloaded?); put back")
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError) as err:
        log.error("cannot check the input rules: %s", err)
