"""What the agent hears from the kernel: others' ruleset changes, address and route changes.

Each source sets a flag and wakes the agent's loop; the loop decides what to check. A
ruleset change is weighed by what it touched (`owned.change_weight`): changes to others'
tables wake nobody, and only a change to the agent's own objects (or one that cannot be
told) marks them as changed; one to Qubes' chains holding our jumps only asks for a look. The
agent's own loads go unheard: it leaves the ruleset group while it loads, so the kernel
builds no notifications of them (10.9 MB for 8,334 forwards, past any receive buffer: the
overflow alone read as someone else's change), and the ruleset generation read before and
after tells whether anyone else committed meanwhile.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ..netlink.events import LOST, KernelEvents, network_events, others_ruleset_events
from ..netlink.generation import ruleset_generation
from ..netlink.transactions import generations_between
from ..nft.owned import OwnedJumps
from .nft_port import NftResult
from .owned import OURS, change_weight
from .script_loader import ScriptLoader

EVENTS_RESTART = 1.0  # after the notification socket failed

log = logging.getLogger("qubes_portfwd.agent")


class KernelWatch:
    """The flags the kernel's notifications set; `wake` is set with each."""

    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake
        self.ruleset_changed = asyncio.Event()
        self.owned_changed = False  # with ruleset_changed: someone else changed our objects
        self.network_changed = asyncio.Event()
        self.unannounced = False  # a notification source is unavailable: check on a timer
        self._ruleset_events: KernelEvents | None = None  # while subscribed
        # The ruleset generation the last load left; None if someone else committed around it.
        self.loaded_generation: int | None = None
        self.load_started: int | None = None  # and the generation it started from

    def watch(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """Both sources watched until `stop` (the caller cancels the tasks)."""
        return [
            asyncio.create_task(
                self._watch(self.subscribe_ruleset, self.ruleset_changed, stop, self._weighed)
            ),
            asyncio.create_task(self._watch(network_events, self.network_changed, stop)),
        ]

    def subscribe_ruleset(self) -> KernelEvents:
        """Others' ruleset changes, from a new subscription that own loads leave quiet."""
        self._ruleset_events = others_ruleset_events(weigh=change_weight)
        return self._ruleset_events

    def _weighed(self, weight: int) -> None:
        if weight >= OURS:
            self.owned_changed = True

    async def load_unheard(self, loader: ScriptLoader, script: str, owned: OwnedJumps) -> NftResult:
        """`loader.load` while not listening to the ruleset's notifications; a transaction of
        anyone else committed meanwhile counts as announced, a change to our objects."""
        events = self._ruleset_events
        self.loaded_generation = self.load_started = None
        commits = loader.commits
        try:
            before = ruleset_generation()
            if events is not None:
                events.leave()
        except OSError as err:
            log.warning("cannot tell our load from others' (%s)", err)
            return await loader.load(script, owned)
        try:
            return await loader.load(script, owned)
        finally:
            after: int | None = None
            try:
                # Unless the watcher has closed it meanwhile (it then subscribed anew, and
                # the new subscription heard our load, ours by its committer).
                if events is not None and events is self._ruleset_events:
                    events.join()
                after = ruleset_generation()
            except OSError as err:
                log.error("no ruleset notifications after our load (%s): checking on a timer", err)
                self.unannounced = True
            if after is not None and generations_between(before, after) == loader.commits - commits:
                self.loaded_generation, self.load_started = after, before
            elif events is not None:  # unheard, so it cannot be weighed
                self.owned_changed = True
                self.ruleset_changed.set()
                self.wake.set()

    def unchanged_since_load(self) -> bool:
        """Whether the ruleset is still as the last load left it: nobody committed since."""
        try:
            return self.loaded_generation == ruleset_generation()
        except OSError:
            return False

    async def _watch(
        self,
        subscribe: Callable[[], KernelEvents],
        changed: asyncio.Event,
        stop: asyncio.Event,
        weighed: Callable[[int], None] | None = None,
    ) -> None:
        """Flag every change the kernel announces (`weighed` is told each one's weight),
        re-subscribing if reading fails (which counts as a change of anything)."""
        while not stop.is_set():
            try:
                events = subscribe()
            except OSError as err:
                log.error("no kernel notifications (%s): checking on a timer", err)
                self.unannounced = True
                return
            try:
                while True:
                    weight = await events.next_change()
                    if weighed is not None:
                        weighed(weight)
                    changed.set()
                    self.wake.set()
            except OSError as err:
                log.warning("reading kernel notifications failed (%s); subscribing again", err)
            finally:
                if events is self._ruleset_events:
                    self._ruleset_events = None
                events.close()
            if weighed is not None:
                weighed(LOST)
            changed.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EVENTS_RESTART)
