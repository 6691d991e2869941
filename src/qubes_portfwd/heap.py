"""Handing freed heap back to the kernel after large, short-lived work (glibc's malloc_trim).

Python frees small objects into its own arenas and larger ones to malloc, which keeps freed
pages mapped: after planning or compiling 10,000 forwards, megabytes stay resident at rest.
Elsewhere than glibc it does nothing.
"""

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], object] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return trim  # type: ignore[no-any-return]


def release_freed_heap() -> None:
    """Give back what malloc holds free (0.06 ms measured after a publish of 10,000 forwards)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
