"""The agent's loop: watch the qube's entries, apply them as one nft transaction, report.

It re-applies when the entries change, when a failed apply is due for a retry, and when
a check finds that the rules it owns are no longer as it left them (first withdrawing its
`applied` report: dom0 must not show rules the kernel lost) or that a Qubes table it lacked
is back, or that the qube's addresses or its routes to DNAT targets changed. Checks run
when the kernel announces a change (ruleset, addresses, routes): an idle qube sleeps without
a timer. Its own nft transactions are not announced to it, and others' are weighed by what
they touched (`kernel_watch.py`): a change to our objects is repaired, one to the Qubes
chains holding our jumps costs a listing of those chains, anything else nothing; the
ruleset is never listed whole (10,000 forwards: over a second of CPU). Only without
notifications (no CAP_NET_ADMIN) does it check every few seconds, against a fingerprint of
what it owns taken after each apply.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..db.qube import QubeChannel
from ..db.watch import next_watch
from ..model.db_layout import ERROR, HANDLED, MARKER, STATUS_PREFIX, UPDATED
from ..model.entries import Hop, hop_key
from ..model.errors import ValidationError
from ..nft.owned import parse_owned_jumps
from ..nft.syntax import CUSTOM_CHAINS
from ..ports.qube_db import QubeDb
from .compile import TargetDevices, build_script, dnat_targets, left_out, ssdp_replies
from .conntrack import forget_flows, removed_hops
from .custom_chains import CustomChains
from .downstream_targets import route_devices
from .entries import ParsedEntries, parse_entries, parse_settings
from .gc_pause import collector_paused
from .in_force import InForceRecord
from .kernel_watch import KernelWatch
from .local_addresses import InterfaceAddresses, read_interface_addresses
from .nft_port import BatchPort, NftPort, NftResult
from .owned import owned_fingerprint
from .removal import remove_owned
from .script_loader import ScriptLoader
from .status import entry_status, overall_error, repairing

# At most this often after ruleset changes. Until the check, rules lost from the kernel are
# still reported applied: keep it short (its cost is bounded by CHECK_SHARE below).
CHECK_INTERVAL = 0.1
FALLBACK_CHECK_INTERVAL = 5.0  # checked on a timer only while notifications are unavailable
FALLBACK_CHECK_SHARE = 0.02  # of the time then (10,000 forwards: a 1.5 s check every 75 s)
CHECK_SHARE = 0.2  # at most this share of time goes to the check on a very large ruleset
RETRY_INTERVAL = 1.0  # after a failed apply (e.g. base rules not loaded yet)
REPORT_TIMEOUT = 5.0  # taking back the report on stop; the rules go in any case
# Up to this many entries the store is read and the report written in the loop's thread:
# a few DB calls, where each hand-off to a worker thread cost ~0.3 ms of every level; a
# larger store (a network qube at 1,000 forwards: hundreds of keys) still goes to a thread.
SMALL_STORE = 64

log = logging.getLogger("qubes_portfwd.agent")


@dataclass(frozen=True)
class ApplyOutcome:
    generation: int
    ok: bool
    error: str | None
    parsed: ParsedEntries
    interface_addresses: InterfaceAddresses | None = None
    target_devices: TargetDevices | None = None
    per_key: Mapping[str, str] = field(default_factory=dict)  # as reported
    reported_error: str | None = None
    # IP families left out because Qubes' `qubes` table (or its custom chains) was missing.
    missing_bases: frozenset[int] = frozenset()
    jumped_from: frozenset[int] = frozenset()  # families whose custom chains hold our jumps


class Agent:
    """One qube's agent; `run` until `stop` is set, or `apply_current` for a single pass."""

    def __init__(
        self,
        db: QubeDb,
        runner: NftPort,
        *,
        check_interval: float = CHECK_INTERVAL,
        in_force: InForceRecord | None = None,
        batches: BatchPort | None = None,
    ) -> None:
        self.db = db
        self.store = QubeChannel(db)
        self.runner = runner
        self.loader = ScriptLoader(runner, batches)
        self.chains = CustomChains(runner)
        self.check_interval = check_interval
        self._fingerprint: str | None = None
        self._last: ApplyOutcome | None = None
        self._commit_seen = True  # the entries at start count as a fresh commit
        self._wake = asyncio.Event()  # a ruleset change or stop: look before the next watch
        self._read_retry_at = 0.0
        self._next_check = 0.0
        self._next_fallback_check = 0.0
        self.kernel = KernelWatch(self._wake)
        self._record = in_force or InForceRecord(None)
        # What an earlier agent left in force: flows of hops removed meanwhile end on the
        # first apply.
        self._in_force: tuple[Hop, ...] = self._record.load()

    @property
    def last(self) -> ApplyOutcome | None:
        return self._last

    async def apply_current(self) -> ApplyOutcome:
        generation, untrusted_entries = await asyncio.to_thread(self.store.read)
        return await self.apply(generation, untrusted_entries)

    async def apply(self, generation: int, untrusted_entries: dict[str, str]) -> ApplyOutcome:
        """Compile and load one generation; write its status; never raises for bad input."""
        settings = parse_settings(untrusted_entries)
        earlier = self._last.parsed.hops if self._last is not None else ()
        with collector_paused():
            parsed = parse_entries(untrusted_entries, earlier)
        error: str | None = None
        missing_bases: frozenset[int] = frozenset()
        jumped_from: frozenset[int] = frozenset()  # families whose custom chains we jump from
        # In this thread: two rtnetlink requests of ~50 and ~30 us, where handing each to a
        # worker thread cost ~260 us.
        addresses = read_interface_addresses()
        devices = route_devices(dnat_targets(parsed))
        listing = await self.chains.listing()
        if not listing.ok:
            error = f"nft list ruleset failed: {listing.output}"
        else:
            try:
                with collector_paused():
                    compiled = build_script(parsed, settings, listing.output, addresses, devices)
            except Exception as err:  # a compiler bug must not stop the agent; nothing applied
                log.exception("generation %d: the compiler failed", generation)
                error = f"not applied: compiling failed: {err}"
            else:
                parsed = parsed.with_errors(left_out(compiled))
                wanted = {h.family for h in parsed.hops} | (
                    {4} if ssdp_replies(settings) else set()
                )
                owned = parse_owned_jumps(listing.output)
                jumped_from = owned.base_families
                missing_bases = frozenset(wanted - jumped_from)
                result = await self.kernel.load_unheard(self.loader, compiled.script, owned)
                if not result.ok:
                    error = f"not applied: nft -f failed: {result.output}"
        recorded = self._in_force
        if error is None:
            in_force = tuple(h for h in parsed.hops if hop_key(h) not in parsed.errors)
            await forget_flows(removed_hops(self._in_force, in_force), settings.addresses)
            self._in_force = in_force
        per_key = entry_status(untrusted_entries, parsed, error)
        reported_error = overall_error(error, settings.problems)
        if len(per_key) <= SMALL_STORE:
            self.store.write_status(generation, per_key, reported_error)
        else:
            await asyncio.to_thread(self.store.write_status, generation, per_key, reported_error)
        if self._in_force != recorded:
            # After the report (10,000 hops: ~30 ms) and after the flows are gone: a crash in
            # between leaves the older record, whose extra hops only repeat the cleanup.
            await asyncio.to_thread(self._record.save, self._in_force)
        if error is None and not (
            self.loader.left_qubes_chains
            and self.chains.carry_over(self.kernel.load_started, self.kernel.loaded_generation)
        ):
            await self.chains.list_ahead()
        if error is None and self.kernel.unannounced:
            # After the report: with 10,000 forwards this listing takes over a second, and
            # only the later checks on a timer need it.
            self._fingerprint = await self._reference_fingerprint(jumped_from)
        rejected = sum(1 for key in per_key if key in parsed.errors)
        log.info(
            "generation %d: %s; %d entries, %d rejected",
            generation,
            "applied" if error is None else error,
            len(per_key),
            rejected,
        )
        self._last = ApplyOutcome(
            generation,
            error is None,
            error,
            parsed,
            addresses,
            devices,
            per_key,
            reported_error,
            missing_bases,
            jumped_from,
        )
        return self._last

    async def _reference_fingerprint(self, jumped_from: frozenset[int]) -> str | None:
        """What later checks compare with; None (so the next check repairs) unless the
        listing shows the ruleset as this apply's load left it (nobody committed since)."""
        if not self.kernel.unchanged_since_load():
            return None
        listing: NftResult = await self.runner.list_ruleset_json()
        if (
            not listing.ok
            or not self.kernel.unchanged_since_load()
            or not _holds_our_jumps(listing.output, jumped_from)
        ):
            return None
        return owned_fingerprint(listing.output)

    async def _current_fingerprint(self) -> str | None:
        listing: NftResult = await self.runner.list_ruleset_json()
        return owned_fingerprint(listing.output) if listing.ok else None

    async def owned_rules_intact(self, last: ApplyOutcome, owned_changed: bool) -> bool:
        """Whether what the last successful apply left is still in the ruleset.

        With the kernel's notifications: unless they said someone changed our objects,
        whether our jumps are all still in Qubes' chains (a listing of those alone). Without
        them: a fingerprint of all we own against the one taken after the apply.
        """
        if self.kernel.unannounced:
            current = await self._current_fingerprint()
            return current is not None and current == self._fingerprint
        if owned_changed:
            return False
        listing = await self.runner.list_custom_chains_json()
        return listing.ok and _holds_our_jumps(listing.output, last.jumped_from)

    async def run(self, stop: asyncio.Event) -> None:
        """Apply every commit dom0 makes; repair lost rules; retry failures; until `stop`.

        Sleeps on the DB's watch descriptor and the kernel's notifications; a timer only
        paces checks after a change and retries after a failure: no polling.
        """
        self.store.watch_commits()
        watchers = self.kernel.watch(stop)
        stopper = asyncio.create_task(self._wake_on(stop))
        try:
            while not stop.is_set():
                await self.step()
                if self._last is not None and not self._commit_seen:
                    # A commit that landed while this one applied (its event may already
                    # have been taken by the binding during our own writes).
                    generation = await asyncio.to_thread(self.store.generation)
                    self._commit_seen = generation != self._last.generation
                if stop.is_set():
                    break
                if self._commit_seen:
                    delay = self._read_retry_at - time.monotonic()
                    if delay > 0:  # the entries could not be read: again after a pause
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                fired = await next_watch(self.db, self._until_due(), self._wake)
                self._wake.clear()
                if fired == MARKER:
                    self._commit_seen = True
        finally:
            for task in (*watchers, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    def _until_due(self) -> float | None:
        """Seconds until the next check or retry falls due; None: none until an event."""
        last = self._last
        now = time.monotonic()
        if last is None:
            return 0.0
        kernel = self.kernel
        if not last.ok or kernel.ruleset_changed.is_set() or kernel.network_changed.is_set():
            return max(0.0, self._next_check - now)
        if kernel.unannounced:
            return max(0.0, max(self._next_fallback_check, self._next_check) - now)
        return None

    async def step(self) -> None:
        """One turn of the loop: a new generation first, else a retry or a due check."""
        last = self._last
        if self._commit_seen or last is None:
            # A watch event can outlive the commit it announced (read again meanwhile):
            # only a generation not applied yet is applied.
            self._commit_seen = False
            try:
                if last is not None and len(last.per_key) <= SMALL_STORE:
                    generation, untrusted_entries = self.store.read()
                else:
                    generation, untrusted_entries = await asyncio.to_thread(self.store.read)
            except (OSError, ValueError) as err:
                log.error("cannot read the entries: %s", err)
                self._commit_seen = True
                self._read_retry_at = time.monotonic() + RETRY_INTERVAL
                return
            if last is None or generation != last.generation:
                outcome = await self.apply(generation, untrusted_entries)
                self._schedule_check(0.0 if outcome.ok else RETRY_INTERVAL)
                return
        now = time.monotonic()
        if now < self._next_check:
            return
        if not last.ok:
            log.info("generation %d: retrying", last.generation)
            outcome = await self.apply_current()
            self._schedule_check(0.0 if outcome.ok else RETRY_INTERVAL)
            return
        timed = self.kernel.unannounced and now >= self._next_fallback_check
        rules_changed = self.kernel.ruleset_changed.is_set() or timed
        network_changed = self.kernel.network_changed.is_set() or timed
        if rules_changed or network_changed:
            owned_changed = self.kernel.owned_changed
            self.kernel.ruleset_changed.clear()
            self.kernel.owned_changed = False
            self.kernel.network_changed.clear()
            intact = not rules_changed or await self.owned_rules_intact(last, owned_changed)
            took = time.monotonic() - now
            if not intact:
                log.warning("generation %d: owned rules changed; re-applying", last.generation)
                await self._report_repairing(last)
                self.loader.forget()
                await self.apply_current()
            elif rules_changed and last.missing_bases and await self._base_tables_returned(last):
                # Qubes' table came back alone: nothing of ours changed, but what was left
                # out for want of it can apply now.
                log.info("generation %d: Qubes' base table is back; re-applying", last.generation)
                await self.apply_current()
            elif network_changed and (
                await asyncio.to_thread(read_interface_addresses) != last.interface_addresses
            ):
                # The edge's outside address (DHCP) decides what hairpins.
                log.info("generation %d: interface addresses changed; re-applying", last.generation)
                await self.apply_current()
            elif network_changed and await self._targets_rerouted(last):
                # A downstream qube came (back): a DNAT to it refused before may apply now.
                log.info(
                    "generation %d: routes to DNAT targets changed; re-applying", last.generation
                )
                await self.apply_current()
            self._schedule_check(took / CHECK_SHARE)
            # Without notifications the check is all there is: keep it a small share.
            fallback = max(FALLBACK_CHECK_INTERVAL, took / FALLBACK_CHECK_SHARE)
            self._next_fallback_check = time.monotonic() + fallback

    async def _report_repairing(self, last: ApplyOutcome) -> None:
        """Withdraw `applied` before repairing: the kernel lost those rules, and with
        thousands of forwards putting them back takes seconds."""
        per_key = repairing(last.per_key)
        if per_key != last.per_key:
            await asyncio.to_thread(
                self.store.write_status, last.generation, per_key, last.reported_error
            )

    async def withdraw(self) -> NftResult:
        """On stop: take back the report (dom0 then sees no agent, as before the first one),
        then remove every object of ours from the ruleset (Qubes' tables keep theirs)."""
        if self._last is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._take_back_report), REPORT_TIMEOUT)
            except Exception as err:  # the qube's DB may be going down with it; remove anyway
                log.warning("cannot take back the report: %s", err or type(err).__name__)
        self.loader.forget()
        result = await remove_owned(self.runner)
        self._fingerprint = None
        if result.ok:
            log.info("removed this agent's tables, chains, sets and jumps")
        else:
            log.error("removing this agent's rules failed: %s", result.output)
        return result

    def _take_back_report(self) -> None:
        # The handled counter first: without it dom0 reads no report at all.
        for path in (HANDLED, f"{STATUS_PREFIX}/", ERROR, UPDATED):
            self.db.rm(path)

    async def _base_tables_returned(self, last: ApplyOutcome) -> bool:
        listing = await self.runner.list_custom_chains_json()
        if not listing.ok:
            return False
        try:
            present = parse_owned_jumps(listing.output).base_families
        except ValidationError:
            return False
        return bool(last.missing_bases & present)

    async def _targets_rerouted(self, last: ApplyOutcome) -> bool:
        targets = dnat_targets(last.parsed)
        if not targets:
            return False
        return await asyncio.to_thread(route_devices, targets) != last.target_devices

    def _schedule_check(self, extra: float) -> None:
        self._next_check = time.monotonic() + max(self.check_interval, extra)


def _holds_our_jumps(untrusted_listing: str, families: frozenset[int]) -> bool:
    """Whether each of `families` still has Qubes' custom chains, each jumping to ours."""
    try:
        owned = parse_owned_jumps(untrusted_listing)
    except ValidationError:
        return False
    chains = {(jump.family, jump.chain) for jump in owned.jumps}
    return families <= owned.base_families and all(
        (family, chain) in chains for family in families for chain in CUSTOM_CHAINS.values()
    )
