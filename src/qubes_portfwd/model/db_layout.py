"""Where our keys live in a qube's QubesDB, and the text forms of their values (pure).

Dom0 writes the entries under FORWARD_PREFIX, removes stale ones, then writes the commit
marker MARKER = generation LAST (as core-admin does for `/qubes-firewall/<ip>`, which is
Qubes' and never ours). The agent acts on the marker, writes one status per entry under
STATUS_PREFIX, its overall error and report time, then HANDLED = generation LAST. A tunnel
qube's lease keeper writes its public endpoints under PUBLIC_PREFIX.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .entries import FORWARD_PREFIX
from .forward_status import PUBLIC_PREFIX

MARKER = "/qubes-portfwd"  # dom0: the generation just committed
HANDLED = "/qubes-portfwd-handled"  # the agent: the generation it handled (written last)
STATUS_PREFIX = "/qubes-portfwd-status"  # + the entry's key: `applied` or why not
ERROR = "/qubes-portfwd-error"  # the agent's overall error; absent when none
UPDATED = "/qubes-portfwd-updated"  # the agent's report time (seconds since the epoch)
OWNED_PREFIXES = (FORWARD_PREFIX,)
# What the qube's programs write: never part of what dom0 publishes or the agent applies.
QUBE_WRITTEN = (HANDLED, STATUS_PREFIX + "/", ERROR, UPDATED, PUBLIC_PREFIX)

STATUS_APPLIED = "applied"
# QubesDB's own limits (qubesdb.h): a path is shorter than 64 bytes, a value than 3072.
MAX_PATH = 63
MAX_VALUE = 3071
MAX_TEXT = 1000  # a status or error text as reported; nft's messages can be long
# One regular expression per test, not a Python step per character: dom0 checks every entry
# it publishes and reads every status back (at 1,000 forwards, ~800 per network qube).
_VALID_PATH = re.compile(rf"/[A-Za-z0-9_/.:@-]{{0,{MAX_PATH - 1}}}")
_PRINTABLE = re.compile(r"[ -~]*")
_PRINTABLE_BYTES = re.compile(rb"[ -~]*")
MAX_COUNTER_DIGITS = 18


@dataclass(frozen=True)
class Status:
    """What an agent reported: the entries generation it handled and the outcome per key."""

    handled: int
    per_key: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    updated: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_key", MappingProxyType(dict(self.per_key)))

    @property
    def failed_keys(self) -> dict[str, str]:
        return {k: v for k, v in self.per_key.items() if v != STATUS_APPLIED}


NO_STATUS = Status(handled=0)


def valid_path(path: str) -> bool:
    """A path QubesDB accepts: `/`-rooted, short, only its allowed characters."""
    return _VALID_PATH.fullmatch(path) is not None


def status_path(key: str) -> str:
    return STATUS_PREFIX + key


def is_qube_written(path: str) -> bool:
    return path in (HANDLED, ERROR, UPDATED) or path.startswith(QUBE_WRITTEN)


def text_value(text: str) -> bytes:
    """A report text as a QubesDB value: printable ASCII, capped (newlines become spaces)."""
    if _PRINTABLE.fullmatch(text):
        printable = text
    else:
        printable = "".join(c if " " <= c <= "~" else " " for c in text)
    if len(printable) > MAX_TEXT:
        printable = printable[: MAX_TEXT - 3] + "..."
    return printable.encode("ascii")


def counter_value(value: int) -> bytes:
    return str(value).encode("ascii")


def parse_counter(untrusted_value: bytes | None) -> int | None:
    """A generation counter as written by us; None when absent or not a plain decimal."""
    if untrusted_value is None or not 0 < len(untrusted_value) <= MAX_COUNTER_DIGITS:
        return None
    if not untrusted_value.isdigit() or not untrusted_value.isascii():
        return None
    return int(untrusted_value)


def parse_time(untrusted_value: bytes | None) -> float:
    """A report time; 0.0 when absent or malformed."""
    if untrusted_value is None or len(untrusted_value) > 32:
        return 0.0
    try:
        value = float(untrusted_value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return 0.0
    return value if value >= 0.0 and value == value and value != float("inf") else 0.0


def decode_text(untrusted_value: bytes) -> str:
    """A value as printable text, capped: what a qube wrote is shown, never interpreted."""
    capped = untrusted_value[: MAX_TEXT + 3]
    if _PRINTABLE_BYTES.fullmatch(capped):
        return capped.decode("ascii")
    text = capped.decode("ascii", errors="replace")
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def report_from(untrusted_values: Mapping[str, bytes]) -> Status:
    """An agent's report from its keys (as multiread gave them); NO_STATUS before one."""
    handled = parse_counter(untrusted_values.get(HANDLED))
    if handled is None:
        return NO_STATUS
    per_key = {
        untrusted_path.removeprefix(STATUS_PREFIX): decode_text(value)
        for untrusted_path, value in untrusted_values.items()
        if untrusted_path.startswith(STATUS_PREFIX + "/")
        and untrusted_path.removeprefix(STATUS_PREFIX).startswith(OWNED_PREFIXES)
    }
    untrusted_error = untrusted_values.get(ERROR)
    return Status(
        handled=handled,
        per_key=per_key,
        error=None if untrusted_error is None else decode_text(untrusted_error),
        updated=parse_time(untrusted_values.get(UPDATED)),
    )
