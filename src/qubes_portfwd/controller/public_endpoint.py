"""Waiting for a tunnel qube's lease keeper to record a forward's public endpoint.

The keeper writes `/qubes-portfwd-public/<id>/<proto>/<port>` = `ADDR:PORT` into its own DB
once its provider granted the port. dom0 watches that subtree and re-reads on each wake,
bounded; nothing sleeps in a loop.
"""

import asyncio
import contextlib
import time

from ..db.dom0 import Dom0Channel
from ..db.watch import next_watch
from ..model.errors import ValidationError
from ..model.forward_status import PUBLIC_PREFIX, parse_public_entry
from ..ports.qube_db import QubeDb

Endpoint = tuple[str, int]


def endpoint_in(
    untrusted_public: dict[str, str], fid: str, proto: str, port: int
) -> Endpoint | None:
    """The endpoint a keeper recorded for this forward's port, if any (bad entries skipped)."""
    for untrusted_key, untrusted_value in untrusted_public.items():
        try:
            found_id, endpoint = parse_public_entry(untrusted_key, untrusted_value)
        except ValidationError:
            continue
        if (found_id, endpoint.proto, endpoint.port) == (fid, proto, port):
            return str(endpoint.address), endpoint.public_port
    return None


async def wait_for_endpoint(
    db: QubeDb, fid: str, proto: str, port: int, timeout: float
) -> Endpoint | None:
    """The endpoint once the keeper wrote it into `db`; None after `timeout` seconds.

    `db` must be a handle of this wait alone: a watch fired on a shared handle may be
    consumed by another reader (the publisher waiting in its thread), and this wait would
    sleep through it.
    """
    channel = Dom0Channel(db)
    # Watch first, then read: a write landing between the two still wakes us.
    await asyncio.to_thread(db.watch, PUBLIC_PREFIX)
    deadline = time.monotonic() + timeout
    while True:
        found = endpoint_in(await asyncio.to_thread(channel.read_public), fid, proto, port)
        remaining = deadline - time.monotonic()
        if found is not None or remaining <= 0:
            return found
        await next_watch(db, remaining)


def close_handle(db: QubeDb) -> None:
    """Release a handle opened for one wait (the lab's holds an inotify descriptor)."""
    close = getattr(db, "close", None)  # the port has none: the real binding closes on GC
    if close is not None:
        with contextlib.suppress(OSError):
            close()
