"""Open the daemon's ports to downstream qubes only, in Qubes' `custom-input`, and keep them.

Qubes' input chain drops everything not accepted; an accept must come from `qubes`' own
`custom-input`. Ours sits in a chain of its own, jumped to from there, and matches only
interface group 2 (the vifs), so the uplink side never reaches the daemon. Before the accept,
each source address has a packet rate (UDP) and a connection rate (TCP) in the kernel: a
qube flooding the daemon is dropped there and never crowds out the others' requests.

Served in each family natd listens in: `ip qubes` always, `ip6 qubes` too where the qube
has IPv6 (PCP over IPv6). A reload of Qubes' base rules deletes and re-creates the `qubes`
table; `keep_open` checks after each burst of ruleset changes the kernel announces in a
`qubes` table (so it also notices its chain flushed or a jump deleted; the agent's changes
to its own tables wake nothing), and sleeps without a timer otherwise.
While the table is missing there is nothing to put back: that is said once.
"""

import asyncio
import contextlib
import json
import logging
import subprocess
from collections.abc import Awaitable
from enum import Enum
from typing import Any

from ..netlink.events import KernelEvents, TableRulesetEvents

CHAIN = "natd-input"
BASE_TABLE = "qubes"  # Qubes' own table (ip, and ip6 with IPv6): our chain, sets and jump
JUMP_COMMENT = "qubes-portfwd-natd"
UDP_RATE_SET = "natd-udp-rate"
TCP_RATE_SET = "natd-tcp-rate"
# Per source address; far above what NAT-PMP, PCP, SSDP and UPnP clients send.
UDP_PER_SOURCE = "100/second burst 200 packets"
TCP_PER_SOURCE = "20/second burst 40 packets"
RULES_IN_CHAIN = 4
NFT_TIMEOUT = 10.0
FALLBACK_CHECK = 5.0  # seconds between checks while the kernel's notifications are unavailable
SETTLE = 0.05  # a reload deletes several tables: wait this long for the rest before checking
MAX_SETTLE = 1.0  # ... but no longer than this in all, however many events follow
PARSE_AT_MOST = 64  # notifications read one by one per wait; a larger burst counts whole

log = logging.getLogger("qubes-portfwd-natd")


class NftError(OSError):
    """`nft -f` refused a script; the message is nft's own."""


class Check(Enum):
    OPEN = "open"  # everything in place
    PUT_BACK = "put back"  # something was missing and is back
    NO_BASE = "no base table"  # Qubes' table (or its custom-input) is missing: wait for it


def _nft(script: str) -> None:
    done = subprocess.run(
        ["nft", "-f", "-"],
        input=script,
        text=True,
        check=False,
        timeout=NFT_TIMEOUT,
        capture_output=True,
    )
    if done.returncode != 0:
        raise NftError(" ".join(done.stderr.split()) or f"nft exited with {done.returncode}")


Families = tuple[int, ...]


def _table(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def _chain_rules(chain: str, family: int = 4) -> list[dict[str, Any]] | None:
    """The rules of `ip|ip6 qubes <chain>`; None when the chain (or the table) is missing."""
    listing = subprocess.run(
        ["nft", "-j", "list", "chain", _table(family), "qubes", chain],
        text=True,
        check=False,
        timeout=NFT_TIMEOUT,
        capture_output=True,
    )
    if listing.returncode != 0:
        return None
    untrusted_items = json.loads(listing.stdout).get("nftables", [])
    return [i["rule"] for i in untrusted_items if isinstance(i.get("rule"), dict)]


def _jump_handles(custom_input: list[dict[str, Any]]) -> list[int]:
    return [int(rule["handle"]) for rule in custom_input if rule.get("comment") == JUMP_COMMENT]


def _script(udp_ports: list[int], tcp_ports: list[int], add_jump: bool, family: int = 4) -> str:
    udp = ", ".join(str(p) for p in udp_ports)
    tcp = ", ".join(str(p) for p in tcp_ports)
    table = _table(family)
    where = f"{table} qubes {CHAIN}"
    saddr = f"{table} saddr"
    script = "".join(
        f"add set {table} qubes {name} {{ type ipv{family}_addr; size 4096; "
        "flags dynamic,timeout; timeout 60s; }\n"
        for name in (UDP_RATE_SET, TCP_RATE_SET)
    )
    script += (
        f"add chain {where}\n"
        f"flush chain {where}\n"
        f"add rule {where} iifgroup 2 udp dport {{ {udp} }} "
        f"update @{UDP_RATE_SET} {{ {saddr} limit rate over {UDP_PER_SOURCE} }} drop\n"
        f"add rule {where} iifgroup 2 udp dport {{ {udp} }} accept\n"
        f"add rule {where} iifgroup 2 tcp dport {{ {tcp} }} ct state new "
        f"update @{TCP_RATE_SET} {{ {saddr} limit rate over {TCP_PER_SOURCE} }} drop\n"
        f"add rule {where} iifgroup 2 tcp dport {{ {tcp} }} accept\n"
    )
    if add_jump:
        jump = f'add rule {table} qubes custom-input jump {CHAIN} comment "{JUMP_COMMENT}"\n'
        script += jump
    return script


def open_ports(udp_ports: list[int], tcp_ports: list[int], families: Families = (4,)) -> None:
    """Idempotent: the chain is rewritten, the jump added only when missing."""
    for family in families:
        custom_input = _chain_rules("custom-input", family)
        if custom_input is None:
            raise NftError(f"Qubes' table {_table(family)} qubes has no custom-input chain")
        _nft(_script(udp_ports, tcp_ports, not _jump_handles(custom_input), family))


def _ensure_open(udp_ports: list[int], tcp_ports: list[int], family: int) -> Check:
    custom_input = _chain_rules("custom-input", family)
    if custom_input is None:
        return Check.NO_BASE
    jumps = _jump_handles(custom_input)
    ours = _chain_rules(CHAIN, family)
    if len(jumps) == 1 and ours is not None and len(ours) == RULES_IN_CHAIN:
        return Check.OPEN
    table = _table(family)
    script = "".join(f"delete rule {table} qubes custom-input handle {h}\n" for h in jumps[1:])
    try:
        _nft(script + _script(udp_ports, tcp_ports, not jumps, family))
    except NftError:
        if _chain_rules("custom-input", family) is None:  # deleted between listing and now
            return Check.NO_BASE
        raise
    return Check.PUT_BACK


def ensure_open(udp_ports: list[int], tcp_ports: list[int], families: Families = (4,)) -> Check:
    """Put the rules back if anything of them is missing, where Qubes' table is there."""
    found = [_ensure_open(udp_ports, tcp_ports, family) for family in families]
    for worst in (Check.NO_BASE, Check.PUT_BACK):
        if worst in found:
            return worst
    return Check.OPEN


def close_ports(families: Families = (4,)) -> None:
    for family in families:
        table = _table(family)
        custom_input = _chain_rules("custom-input", family) or []
        script = "".join(
            f"delete rule {table} qubes custom-input handle {h}\n"
            for h in _jump_handles(custom_input)
        )
        script += f"delete chain {table} qubes {CHAIN}\n"
        script += "".join(
            f"delete set {table} qubes {name}\n" for name in (UDP_RATE_SET, TCP_RATE_SET)
        )
        _nft(script)


class RuleWatch:
    """Checks and says what it found; a lasting condition is logged once, not per check."""

    def __init__(
        self, udp_ports: list[int], tcp_ports: list[int], families: Families = (4,)
    ) -> None:
        self.udp_ports = udp_ports
        self.tcp_ports = tcp_ports
        self.families = families
        self.last = ""  # the condition logged last; "" when all was well

    async def check(self) -> None:
        try:
            found = await asyncio.to_thread(
                ensure_open, self.udp_ports, self.tcp_ports, self.families
            )
        except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError) as err:
            self._say(f"cannot check the input rules: {err}", logging.ERROR)
            return
        if found == Check.PUT_BACK:
            log.warning("input rules were gone (base rules reloaded?); put back")
            self.last = ""
        elif found == Check.NO_BASE:
            self._say(
                f"Qubes' table {'/'.join(_table(f) for f in self.families)} qubes (chain "
                "custom-input) is missing; natd's ports are "
                "closed until Qubes' base rules are loaded again",
                logging.WARNING,
            )
        elif self.last:
            log.info("input rules in place again")
            self.last = ""

    def _say(self, text: str, level: int) -> None:
        if text != self.last:
            log.log(level, "%s", text)
            self.last = text


async def keep_open(
    udp_ports: list[int], tcp_ports: list[int], stop: asyncio.Event, families: Families = (4,)
) -> None:
    """Until `stop`: checked at start and after each burst of ruleset changes the kernel
    announces; on a timer only while the notifications are unavailable."""
    watch = RuleWatch(udp_ports, tcp_ports, families)
    while not stop.is_set():
        try:
            # The agent's changes in its own tables wake no check; a whole load of its
            # touches our `qubes` tables (its jumps) and counts, unparsed past PARSE_AT_MOST.
            events = TableRulesetEvents((BASE_TABLE,), PARSE_AT_MOST)
        except OSError as err:
            log.error("no ruleset notifications (%s); checking on the timer only", err)
            await watch.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FALLBACK_CHECK)
            continue
        try:
            await watch.check()  # what happened before the subscription
            while not stop.is_set():
                if not await _until(events.next_change(), stop):
                    return
                await _settle(events, stop)
                await watch.check()
        except OSError as err:
            log.warning("reading ruleset notifications failed (%s); subscribing again", err)
        finally:
            events.close()


async def _until(change: Awaitable[None], stop: asyncio.Event) -> bool:
    """Whether `change` came before `stop` was set."""
    changed = asyncio.ensure_future(change)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({changed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (changed, stopped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if changed.done() and not changed.cancelled():
        changed.result()  # a read error: the caller subscribes again
        return True
    return False


async def _settle(events: KernelEvents, stop: asyncio.Event) -> None:
    """A reload deletes and re-creates several tables: wait until SETTLE passes quietly
    (MAX_SETTLE at most), so the burst costs one check."""
    loop = asyncio.get_running_loop()
    settled = loop.time() + MAX_SETTLE
    while not stop.is_set() and loop.time() < settled:
        try:
            await asyncio.wait_for(events.next_change(), SETTLE)
        except TimeoutError:
            return
