"""Client calls off the GUI thread: a small thread pool, results delivered on the GUI thread.

Every client call blocks up to the client's timeout (a forward waits for its agents), so no
call runs on the GUI thread; the windows stay responsive and show what is under way.
"""

import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from ..client import AdminClient, QubesdError, ServiceNotRunning
from ..model.errors import ValidationError

MAX_THREADS = 2
GUI_TIMEOUT = 30.0  # seconds one call may take before the window reports it as failed


def error_text(err: BaseException) -> str:
    """One readable line, as the CLIs report the same failure."""
    if isinstance(err, QubesdError):
        text = err.message or err.exc_type
    elif isinstance(err, (ValidationError, ServiceNotRunning)):
        text = str(err)
    elif isinstance(err, ConnectionError):
        text = f"admin service connection failed: {err}"
    elif isinstance(err, OSError):
        text = err.strerror or str(err)
    else:
        text = f"internal error: {type(err).__name__}: {err}"
    return " ".join(text.split())


class _Job(QRunnable):
    def __init__(self, calls: "Calls", number: int, work: Callable[[AdminClient], Any]) -> None:
        super().__init__()
        self.calls = calls
        self.number = number
        self.work = work

    def run(self) -> None:
        try:
            outcome = (True, self.work(self.calls.client))
        except Exception as err:  # reported in the window, never a crashed thread
            outcome = (False, error_text(err))
        # RuntimeError: the window is gone, nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            self.calls.finished.emit(self.number, *outcome)


class Calls(QObject):
    """`run(work, on_done, on_error)`: `work(client)` in the pool, callbacks on the GUI thread."""

    finished = Signal(int, bool, object)

    def __init__(self, client: AdminClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(MAX_THREADS)
        self._numbers = itertools.count()
        self._callbacks: dict[int, tuple[Callable[[Any], None], Callable[[str], None]]] = {}
        self.closed = False
        self.finished.connect(self._deliver)

    def run(
        self,
        work: Callable[[AdminClient], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None],
    ) -> None:
        if self.closed:
            return  # a callback arriving after the window closed must not start more work
        number = next(self._numbers)
        self._callbacks[number] = (on_done, on_error)
        self.pool.start(_Job(self, number, work))

    @property
    def busy(self) -> bool:
        return bool(self._callbacks)

    @Slot(int, bool, object)
    def _deliver(self, number: int, ok: bool, result: object) -> None:
        on_done, on_error = self._callbacks.pop(number)
        if self.closed:
            return
        if ok:
            on_done(result)
        else:
            on_error(str(result))

    def close(self, milliseconds: int = int(GUI_TIMEOUT * 1000)) -> bool:
        """Start nothing more and let running calls end (the window closes); False on timeout."""
        self.closed = True
        return self.pool.waitForDone(milliseconds)
