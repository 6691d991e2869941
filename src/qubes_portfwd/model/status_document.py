"""The status document dom0's controller writes for its front ends (JSON, pure).

    {"version": 1, "sequence": N, "boot_id": "...",
     "qubes": {"work": {"netvm": "sys-firewall", "path": ["sys-firewall", "sys-net"],
                        "path_error": null}, ...},
     "forwards": [ForwardStatus as model.forward_status writes it, ...]}

`path` is the qube's netvm chain to its edge (what `via=` of an external forward records;
an internal one records `netvm` alone), null with `path_error` when there is none.
`sequence` grows with every write, so a reader can tell a newer document from an older one.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .forward_status import ForwardStatus, from_json_value, to_json_value
from .hosts import is_qube_name
from .topology import PathError, Topology

VERSION = 1
MAX_TEXT = 1024


@dataclass(frozen=True)
class QubePath:
    """A qube's network as a front end needs it to fill `via=`."""

    netvm: str | None
    path: tuple[str, ...] | None
    path_error: str | None = None


@dataclass(frozen=True)
class StatusDocument:
    sequence: int
    boot_id: str
    qubes: Mapping[str, QubePath]
    forwards: tuple[ForwardStatus, ...] = field(default=())


def qube_paths(topology: Topology) -> dict[str, QubePath]:
    paths = {}
    for name, qube in sorted(topology.qubes.items()):
        try:
            paths[name] = QubePath(qube.netvm, topology.path(name))
        except PathError as err:
            paths[name] = QubePath(qube.netvm, None, str(err))
    return paths


def dumps(document: StatusDocument) -> bytes:
    return numbered(dumps_unnumbered(document), document.sequence)


def dumps_unnumbered(document: StatusDocument) -> bytes:
    """The document with sequence 0: what it says, whatever its number (`numbered` gives
    it one without encoding 10,000 forwards again)."""
    texts = [forward_text(s) for s in document.forwards]
    return unnumbered_of_texts(document.boot_id, document.qubes, texts)


def forward_text(status: ForwardStatus) -> bytes:
    """One forward as the document's `forwards` list holds it (JSON, keys sorted)."""
    return json.dumps(to_json_value(status), sort_keys=True).encode()


def unnumbered_of_texts(
    boot_id: str, qubes: Mapping[str, QubePath], forward_texts: Sequence[bytes]
) -> bytes:
    """`dumps_unnumbered` of a document whose forwards are already encoded (`forward_text`):
    byte for byte what encoding it whole gives, so a writer may keep each forward's text and
    encode again only the forwards that changed."""
    head: dict[str, Any] = {"boot_id": boot_id}
    tail: dict[str, Any] = {
        "qubes": {
            name: {
                "netvm": q.netvm,
                "path": None if q.path is None else list(q.path),
                "path_error": q.path_error,
            }
            for name, q in sorted(qubes.items())
        },
        "sequence": 0,
        "version": VERSION,
    }
    # Sorted keys: boot_id, forwards, qubes, sequence, version; json's separators ", ", ": ".
    encoded = b"".join(
        (
            json.dumps(head, sort_keys=True).encode()[:-1],
            b', "forwards": [',
            b", ".join(forward_texts),
            b"], ",
            json.dumps(tail, sort_keys=True).encode()[1:],
        )
    )
    if not encoded.endswith(_UNNUMBERED_END):  # keys sorted: sequence and version come last
        raise AssertionError("the status document's last keys moved")
    return encoded


# Where sorted keys put the number: after "qubes", before "version" (no other object has
# a "sequence" key, and a string cannot hold an unescaped quote).
_UNNUMBERED_END = f', "sequence": 0, "version": {VERSION}}}'.encode()


def numbered(unnumbered: bytes, sequence: int) -> bytes:
    """`dumps_unnumbered`'s bytes with `sequence` in place of 0."""
    end = f', "sequence": {int(sequence)}, "version": {VERSION}}}'.encode()
    return unnumbered[: -len(_UNNUMBERED_END)] + end


_DECODER = json.JSONDecoder()
_FORWARDS_KEY = ', "forwards": ['
_QUBES_KEY = '], "qubes": '
_LAST_KEYS = re.compile(r', "sequence": (0|[1-9][0-9]{0,18}), "version": ([0-9]{1,9})\}\s*\Z')


def _around_forwards(untrusted_text: str) -> dict[str, Any] | None:
    """The document's other keys, read around its forwards where the text is laid out as
    `unnumbered_of_texts` writes it (at 10,000 forwards, ~60 ms of every add less); None
    otherwise. The top-level `qubes` key is the last `], "qubes": `: inside a string a
    quote is escaped."""
    start = '{"boot_id": '
    if not untrusted_text.startswith(start):
        return None
    try:
        untrusted_boot_id, end = _DECODER.raw_decode(untrusted_text, len(start))
        if not untrusted_text.startswith(_FORWARDS_KEY, end):
            return None
        qubes_at = untrusted_text.rfind(_QUBES_KEY)
        if qubes_at < end:
            return None
        untrusted_qubes, end = _DECODER.raw_decode(untrusted_text, qubes_at + len(_QUBES_KEY))
    except json.JSONDecodeError:  # another layout (or broken): the whole text decides
        return None
    last = _LAST_KEYS.match(untrusted_text, end)
    if last is None:
        return None
    return {
        "boot_id": untrusted_boot_id,
        "forwards": [],
        "qubes": untrusted_qubes,
        "sequence": int(last.group(1)),
        "version": int(last.group(2)),
    }


def _qube_name(field_name: str, untrusted_value: object) -> str:
    if not isinstance(untrusted_value, str) or not is_qube_name(untrusted_value):
        raise ValidationError(field_name, "expected a qube name")
    return untrusted_value


def _qube_path(name: str, untrusted_value: object) -> QubePath:
    if not isinstance(untrusted_value, dict):
        raise ValidationError(f"qubes.{name}", "expected an object")
    untrusted_netvm = untrusted_value.get("netvm")
    netvm = None if untrusted_netvm is None else _qube_name("qubes.netvm", untrusted_netvm)
    untrusted_path = untrusted_value.get("path")
    path = None
    if untrusted_path is not None:
        if not isinstance(untrusted_path, list):
            raise ValidationError("qubes.path", "expected a list of qube names or null")
        path = tuple(_qube_name("qubes.path", q) for q in untrusted_path)
    untrusted_error = untrusted_value.get("path_error")
    if untrusted_error is not None and (
        not isinstance(untrusted_error, str) or len(untrusted_error) > MAX_TEXT
    ):
        raise ValidationError("qubes.path_error", f"expected text of at most {MAX_TEXT}")
    return QubePath(netvm, path, untrusted_error)


def loads(untrusted_data: bytes, *, with_forwards: bool = True) -> StatusDocument:
    """Parse a status document; any malformed part raises ValidationError naming it.

    Without `with_forwards` its forwards are left unread (none): the boot id and the qubes'
    paths are what filling `via=` and `expire=boot` needs (1,000 forwards: 27 ms to read
    them all, 4.4 ms to parse the JSON).
    """
    try:
        untrusted_text = untrusted_data.decode("utf-8")
        untrusted_document = None if with_forwards else _around_forwards(untrusted_text)
        if untrusted_document is None:
            untrusted_document = json.loads(untrusted_text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValidationError("status", f"expected a JSON object ({err})") from None
    if not isinstance(untrusted_document, dict) or untrusted_document.get("version") != VERSION:
        raise ValidationError("status", f"expected a JSON object of version {VERSION}")
    sequence = untrusted_document.get("sequence")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
        raise ValidationError("sequence", "expected a non-negative integer")
    boot_id = untrusted_document.get("boot_id")
    if not isinstance(boot_id, str) or not 0 < len(boot_id) <= 64:
        raise ValidationError("boot_id", "expected the host's boot id")
    untrusted_qubes = untrusted_document.get("qubes")
    if not isinstance(untrusted_qubes, dict):
        raise ValidationError("qubes", "expected an object of qubes")
    qubes = {_qube_name("qubes", n): _qube_path(n, v) for n, v in untrusted_qubes.items()}
    untrusted_forwards = untrusted_document.get("forwards")
    if not isinstance(untrusted_forwards, list):
        raise ValidationError("forwards", "expected a list of forwards")
    if not with_forwards:
        return StatusDocument(sequence, boot_id, qubes)
    forwards = tuple(from_json_value(f) for f in untrusted_forwards)
    return StatusDocument(sequence, boot_id, qubes, forwards)


def forwards_through(forwards: Sequence[ForwardStatus], qube: str) -> list[ForwardStatus]:
    """A network qube's view: forwards whose hops pass through `qube` (not as their target)."""
    return [f for f in forwards if qube in f.network_qubes]
