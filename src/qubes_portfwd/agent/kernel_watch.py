"""What the agent hears from the kernel: others' ruleset changes, address and route changes.

Each source sets a flag and wakes the agent's loop; the loop decides what to check. The
agent's own loads go unheard: it leaves the ruleset group while it loads, so the kernel
builds no notifications of them (10.9 MB for 8,334 forwards, past any receive buffer: the
overflow alone read as someone else's change), and the ruleset generation read before and
after tells whether anyone else committed meanwhile.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ..netlink.events import KernelEvents, network_events, others_ruleset_events
from ..netlink.generation import ruleset_generation
from ..netlink.transactions import generations_between
from ..nft.owned import OwnedJumps
from .nft_port import NftResult
from .script_loader import ScriptLoader

EVENTS_RESTART = 1.0  # after the notification socket failed

log = logging.getLogger("qubes_portfwd.agent")


class KernelWatch:
    """The flags the kernel's notifications set; `wake` is set with each."""

    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake
        self.ruleset_changed = asyncio.Event()
        self.network_changed = asyncio.Event()
        self.unannounced = False  # a notification source is unavailable: check on a timer
        self._ruleset_events: KernelEvents | None = None  # while subscribed

    def watch(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """Both sources watched until `stop` (the caller cancels the tasks)."""
        return [
            asyncio.create_task(self._watch(self.subscribe_ruleset, self.ruleset_changed, stop)),
            asyncio.create_task(self._watch(network_events, self.network_changed, stop)),
        ]

    def subscribe_ruleset(self) -> KernelEvents:
        """Others' ruleset changes, from a new subscription that own loads leave quiet."""
        self._ruleset_events = others_ruleset_events()
        return self._ruleset_events

    async def load_unheard(self, loader: ScriptLoader, script: str, owned: OwnedJumps) -> NftResult:
        """`loader.load` while not listening to the ruleset's notifications; a transaction of
        anyone else committed meanwhile counts as announced."""
        events = self._ruleset_events
        if events is None:
            return await loader.load(script, owned)
        try:
            before = ruleset_generation()
            events.leave()
        except OSError as err:
            log.warning("listening through our own load (%s)", err)
            return await loader.load(script, owned)
        commits = loader.commits
        try:
            return await loader.load(script, owned)
        finally:
            try:
                events.join()
                committed = generations_between(before, ruleset_generation())
            except OSError as err:
                log.error("no ruleset notifications after our load (%s): checking on a timer", err)
                self.unannounced = True
                committed = -1
            if committed != loader.commits - commits:
                self.ruleset_changed.set()
                self.wake.set()

    async def _watch(
        self,
        subscribe: Callable[[], KernelEvents],
        changed: asyncio.Event,
        stop: asyncio.Event,
    ) -> None:
        """Flag every change the kernel announces, re-subscribing if reading fails."""
        while not stop.is_set():
            try:
                events = subscribe()
            except OSError as err:
                log.error("no kernel notifications (%s): checking on a timer", err)
                self.unannounced = True
                return
            try:
                while True:
                    await events.next_change()
                    changed.set()
                    self.wake.set()
            except OSError as err:
                log.warning("reading kernel notifications failed (%s); subscribing again", err)
            finally:
                if events is self._ruleset_events:
                    self._ruleset_events = None
                events.close()
            changed.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EVENTS_RESTART)
