"""The hops this qube's kernel has in force, remembered across agent restarts.

A forward removed while the agent was down still has open flows in the kernel; the next
agent learns which hops the last one left in force from this record and ends their flows.
It lives in a runtime directory of the qube (tmpfs on Qubes), so it goes with the kernel
state it describes when the qube restarts.
"""

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..model.entries import Hop, format_hop, hop_key, parse_hop
from ..model.errors import ValidationError

RECORD_FILE = "in-force.json"

log = logging.getLogger("qubes_portfwd.agent")


class InForceRecord:
    """`<runtime_dir>/in-force.json`: `{hop key: entry text}`; no directory, no memory."""

    def __init__(self, runtime_dir: str | os.PathLike[str] | None) -> None:
        self.path = None if runtime_dir is None else Path(runtime_dir) / RECORD_FILE

    def load(self) -> tuple[Hop, ...]:
        """The recorded hops; a missing or damaged record counts as none."""
        if self.path is None:
            return ()
        try:
            untrusted_document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return ()
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable (%s); no earlier hops known", self.path, err)
            return ()
        if not isinstance(untrusted_document, dict):
            return ()
        hops = []
        for untrusted_key, untrusted_value in untrusted_document.items():
            try:
                hops.append(parse_hop(str(untrusted_key), str(untrusted_value)))
            except ValidationError as err:
                log.warning("%s: %s: %s; skipped", self.path, untrusted_key, err)
        return tuple(hops)

    def save(self, hops: Iterable[Hop]) -> None:
        """Replace the record atomically; a failure is logged (only flow cleanup depends on it)."""
        if self.path is None:
            return
        document = {hop_key(h): format_hop(h) for h in hops}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{RECORD_FILE}.")
            try:
                with os.fdopen(fd, "w") as temp:
                    json.dump(document, temp, sort_keys=True)
                os.replace(temp_name, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp_name)
                raise
        except OSError as err:
            log.warning("cannot record the hops in force in %s: %s", self.path, err)
