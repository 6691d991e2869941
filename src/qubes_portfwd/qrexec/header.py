"""The line qrexec sends a socket-based dom0 service before the caller's data (pure).

For a call whose target is dom0, qrexec connects to the socket that
`/etc/qubes-rpc/SERVICE` names and first writes `SERVICE+ARG SOURCE TYPE TARGET` and a NUL:
TYPE is `keyword` when the caller named `@adminvm` (TARGET is then `adminvm`), `name` when
it named `dom0`. The caller's stdin follows until its EOF; what the service writes is the
caller's stdout. SOURCE is the calling qube as qrexec knows it (not the caller's claim).
"""

import re
from dataclasses import dataclass

# Ours is short; a longer header is not one qrexec made for this service.
MAX_HEADER = 256
ADMIN_VM = "@adminvm"
# The names a call to dom0 may use, as qrexec's `target_refers_to_dom0` accepts them.
DOM0_TARGETS = {
    ("keyword", "adminvm"): ADMIN_VM,
    ("name", "dom0"): "dom0",
    ("name", "uuid:00000000-0000-0000-0000-000000000000"): "dom0",
}
# qrexec's service-name characters (`+` only as the argument's separator).
_SERVICE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ARGUMENT_RE = re.compile(r"^[A-Za-z0-9_.+-]{0,64}$")
# A qube name as Qubes allows it: a letter first, at most 31 characters.
_QUBE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,30}$")


class HeaderError(ValueError):
    """The header is not one qrexec sends for a call to dom0; the text names the field."""


@dataclass(frozen=True)
class ServiceCall:
    """One call as qrexec announced it: `source` is the caller's trusted identity."""

    service: str
    argument: str
    source: str
    target: str  # "@adminvm" or "dom0", as the caller named it


def split_header(untrusted_data: bytes) -> tuple[bytes, bytes] | None:
    """(header, what follows) once the header's NUL arrived; None while it may still come."""
    end = untrusted_data.find(b"\0", 0, MAX_HEADER + 1)
    if end >= 0:
        return untrusted_data[:end], untrusted_data[end + 1 :]
    if len(untrusted_data) > MAX_HEADER:
        raise HeaderError(f"header: longer than {MAX_HEADER} bytes or missing its NUL")
    return None


def parse_header(untrusted_header: bytes, from_dom0: bool = False) -> ServiceCall:
    """`SERVICE+ARG SOURCE TYPE TARGET` (without its NUL), checked field by field; the
    source a qube's name, or with `from_dom0` (a dom0-only socket, qubesd's framing) dom0."""
    try:
        untrusted_text = untrusted_header.decode("ascii")
    except UnicodeDecodeError:
        raise HeaderError("header: expected ASCII") from None
    untrusted_parts = untrusted_text.split(" ")
    if len(untrusted_parts) != 4:
        raise HeaderError("header: expected 'SERVICE+ARG SOURCE keyword|name TARGET'")
    untrusted_call, untrusted_source, untrusted_type, untrusted_target = untrusted_parts
    untrusted_service, _, untrusted_argument = untrusted_call.partition("+")
    if not _SERVICE_RE.match(untrusted_service):
        raise HeaderError("service: expected letters, digits and _.- (1-64)")
    if not _ARGUMENT_RE.match(untrusted_argument):
        raise HeaderError("argument: expected letters, digits and _.+- (at most 64)")
    if from_dom0:
        if untrusted_source != "dom0":
            raise HeaderError("source: expected dom0 (this socket is dom0's own)")
    elif not _QUBE_RE.match(untrusted_source) or untrusted_source == "dom0":
        raise HeaderError("source: expected the calling qube's name (not dom0)")
    target = DOM0_TARGETS.get((untrusted_type, untrusted_target))
    if target is None:
        raise HeaderError("target: expected 'keyword adminvm' or 'name dom0'")
    return ServiceCall(untrusted_service, untrusted_argument, untrusted_source, target)
