"""The lab's qubes-firewall worker in a network qube: what the stock `qubes-firewall`
service (`qubesagent/firewall.py`) does there, on the lab's QubesDB stand-in.

It watches `/qubes-firewall/` and acts on a source's commit marker (the bare
`/qubes-firewall/<ip>` key core-admin writes last): the `qubes-firewall` tables are built
again from every source's entries, a source whose entries cannot be read or used ends in
reject (fail closed, as the stock worker does), and `/qubes-firewall-handled/<ip>` counts up.
It owns only `table ip|ip6 qubes-firewall`; on stop it deletes them, as the stock one does.
"""

import asyncio
import ipaddress
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from qubes_portfwd.agent.nft_runner import NftRunner
from qubes_portfwd.db.watch import next_watch
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.ports.qube_db import QubeDb

from .entries import FIREWALL_PREFIX, HANDLED_PREFIX, FirewallEntry, IPAddress, parse_firewall
from .nft import FIREWALL_TABLE, BlockedSource, firewall_script
from .resolve import resolve_names, unresolved_sources

DNS_KEYS = (
    "/qubes-primary-dns",
    "/qubes-secondary-dns",
    "/qubes-primary-dns6",
    "/qubes-secondary-dns6",
)

log = logging.getLogger("qubes_lab.qubes_firewall")


@dataclass(frozen=True)
class ReadEntries:
    """Every source's entries after validation; `broken` sources drop all they send."""

    entries: tuple[FirewallEntry, ...] = ()
    broken: Mapping[IPAddress, str] = field(default_factory=dict)


def _address_or_none(untrusted_address: str) -> IPAddress | None:
    # An unparsable address matches no packet; the forward chain's policy drop covers it.
    try:
        address = ipaddress.ip_address(untrusted_address.partition("%")[0])
    except ValueError:
        return None
    return address


def read_entries(untrusted_values: Mapping[str, bytes]) -> ReadEntries:
    """Group `/qubes-firewall/<ip>/<name>` by source and check each source's entries."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for untrusted_path, untrusted_value in untrusted_values.items():
        untrusted_address, _, untrusted_name = untrusted_path[len(FIREWALL_PREFIX) :].partition("/")
        if not untrusted_name:
            groups.setdefault(untrusted_address, {})  # the marker alone: a source without rules
            continue
        groups[untrusted_address][untrusted_name] = untrusted_value.decode("ascii", "replace")
    entries: list[FirewallEntry] = []
    broken: dict[IPAddress, str] = {}
    for untrusted_address, untrusted_group in sorted(groups.items()):
        try:
            entries.append(parse_firewall(untrusted_address, untrusted_group))
        except ValidationError as err:
            address = _address_or_none(untrusted_address)
            if address is not None:
                broken[address] = str(err)
    return ReadEntries(tuple(entries), broken)


def dns_servers(db: QubeDb) -> tuple[IPAddress, ...]:
    """The qube's resolvers (what Qubes' `dns-addr` set holds)."""
    found: list[IPAddress] = []
    for key in DNS_KEYS:
        address = _address_or_none((db.read(key) or b"").decode("ascii", "replace"))
        if address is not None and address not in found:
            found.append(address)
    return tuple(found)


def dsthost_names(entries: tuple[FirewallEntry, ...]) -> dict[str, set[int]]:
    names: dict[str, set[int]] = defaultdict(set)
    for entry in entries:
        for rule in entry.rules:
            if rule.dsthost is not None and rule.dsthost.network is None:
                names[rule.dsthost.text].add(entry.address.version)
    return dict(names)


class FirewallWorker:
    """One network qube's worker on its DB; `run` until `stop` is set."""

    def __init__(self, db: QubeDb, runner: NftRunner | None = None) -> None:
        self.db = db
        self.runner = runner or NftRunner()
        self.blocked: tuple[BlockedSource, ...] = ()

    async def rebuild(self) -> bool:
        """Build both tables from the entries now in the DB; False when nft refused even the
        fallback (every source blocked)."""
        read = read_entries(await asyncio.to_thread(self.db.multiread, FIREWALL_PREFIX))
        names = dsthost_names(read.entries)
        resolved = await resolve_names(names)
        by_source = {
            e.address: {
                r.dsthost.text
                for r in e.rules
                if r.dsthost is not None and r.dsthost.network is None
            }
            for e in read.entries
        }
        broken = {**unresolved_sources(by_source, resolved), **read.broken}
        usable = [e for e in read.entries if e.address not in broken]
        servers = await asyncio.to_thread(dns_servers, self.db)
        script, blocked = firewall_script(
            usable, sorted(broken, key=_order), resolved.addresses, servers
        )
        result = await self.runner.apply(script)
        if not result.ok:
            log.error("applying the rules failed (%s): blocking every source", result.output)
            everyone = sorted({*broken, *(e.address for e in read.entries)}, key=_order)
            script, blocked = firewall_script([], everyone, {}, servers)
            result = await self.runner.apply(script)
            if not result.ok:
                log.error("blocking every source failed too: %s", result.output)
                return False
        reasons = {**{b.address: b.reason for b in blocked}, **broken}
        for address, reason in sorted(reasons.items(), key=lambda item: _order(item[0])):
            log.warning("traffic from %s blocked: %s", address, reason)
        self.blocked = tuple(blocked)
        return True

    def _count_handled(self, untrusted_address: str) -> None:
        address = _address_or_none(untrusted_address)
        if address is None:
            return
        path = f"{HANDLED_PREFIX}{address}"
        untrusted_count = self.db.read(path) or b""
        count = (
            int(untrusted_count) if untrusted_count.isdigit() and len(untrusted_count) < 18 else 0
        )
        self.db.write(path, str(count + 1).encode("ascii"))

    def _targets(self) -> list[str]:
        return sorted(
            {p[len(FIREWALL_PREFIX) :].partition("/")[0] for p in self.db.list(FIREWALL_PREFIX)}
        )

    async def run(self, stop: asyncio.Event) -> None:
        """The initial load, then one rebuild per wake that brought commit markers."""
        self.db.watch(FIREWALL_PREFIX)
        await self.rebuild()
        for target in await asyncio.to_thread(self._targets):
            await asyncio.to_thread(self._count_handled, target)
        try:
            while not stop.is_set():
                fired = await next_watch(self.db, None, stop)
                markers = []
                while fired is not None:  # the lab's DB answers None once nothing is left
                    if fired.startswith(FIREWALL_PREFIX) and fired.count("/") == 2:
                        markers.append(fired[len(FIREWALL_PREFIX) :])
                    fired = await asyncio.to_thread(self.db.read_watch)
                if not markers:
                    continue
                await self.rebuild()
                for address in dict.fromkeys(markers):
                    await asyncio.to_thread(self._count_handled, address)
        finally:
            result = await self.runner.apply(
                f"table ip {FIREWALL_TABLE} {{}}\ndelete table ip {FIREWALL_TABLE}\n"
                f"table ip6 {FIREWALL_TABLE} {{}}\ndelete table ip6 {FIREWALL_TABLE}\n"
            )
            if not result.ok:
                log.error("removing the qubes-firewall tables failed: %s", result.output)


def _order(address: IPAddress) -> tuple[int, int]:
    return (address.version, int(address))
