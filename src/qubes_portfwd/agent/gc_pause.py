"""Pausing Python's cyclic garbage collector over one apply's CPU-bound passes.

Parsing and compiling 10,000 entries allocate hundreds of thousands of small objects, and
each allocation burst triggers collections that walk the whole heap, including the last
apply's hops: about a third of the compile time at 8,334 entries. Those passes make no
reference cycles worth collecting (their garbage goes by reference counting), so the
collector is held off while they run and resumes, with its usual thresholds, after.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside; the collector's state is restored after, on errors too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
