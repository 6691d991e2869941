"""A status document numbered after encoding reads as the one encoded with its number; read
without its forwards, it is the rest of it."""

import dataclasses
import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.model import status_document
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.forward_status import (
    ForwardState,
    ForwardStatus,
    HopState,
    HopStatus,
    PublicEndpoint,
    to_json_value,
)
from qubes_portfwd.model.status_document import QubePath, StatusDocument

TRICKY = ', "sequence": 0, "version": 1}'
BOOT_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"
RULE = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=0.0.0.0/0"
)


def document(sequence: int, text: str) -> StatusDocument:
    hops = (
        HopStatus("sys-net", "edge", HopState.FAILED, text),
        HopStatus("work", "target", HopState.APPLIED),
    )
    public = (PublicEndpoint("tcp", 80, ipaddress.ip_address("192.0.2.1"), 8080),)
    state = ForwardState.FAILED
    forward = ForwardStatus("0123456789ab", "work", RULE, 4, state, text, hops, public)
    qubes = {"work": QubePath("sys-net", ("sys-net",)), "sys-net": QubePath(None, None, text)}
    return StatusDocument(sequence, BOOT_ID, qubes, (forward,))


@given(st.integers(0, 2**53), st.sampled_from(["", TRICKY, 'x"}', "\\", "é"]))
def test_numbering_the_encoded_document_is_encoding_it_numbered(sequence: int, text: str) -> None:
    unnumbered = status_document.dumps_unnumbered(document(sequence, text))
    numbered = status_document.numbered(unnumbered, sequence)
    assert numbered == status_document.dumps(document(sequence, text))
    assert status_document.loads(numbered) == document(sequence, text)


def whole_encoding(document: StatusDocument) -> bytes:
    """The document encoded in one json.dumps, as it was before forwards were kept encoded."""
    value = {
        "version": status_document.VERSION,
        "sequence": 0,
        "boot_id": document.boot_id,
        "qubes": {
            name: {
                "netvm": q.netvm,
                "path": None if q.path is None else list(q.path),
                "path_error": q.path_error,
            }
            for name, q in sorted(document.qubes.items())
        },
        "forwards": [to_json_value(s) for s in document.forwards],
    }
    return json.dumps(value, sort_keys=True).encode()


@given(st.integers(0, 3), st.sampled_from(["", TRICKY, 'x"}', "\\", "é", "forwards"]))
def test_joining_forward_texts_is_encoding_the_document_whole(count: int, text: str) -> None:
    one = document(0, text)
    many = dataclasses.replace(one, forwards=one.forwards * count)
    texts = [status_document.forward_text(s) for s in many.forwards]
    joined = status_document.unnumbered_of_texts(many.boot_id, many.qubes, texts)
    assert joined == whole_encoding(many)
    assert status_document.dumps_unnumbered(many) == whole_encoding(many)


@given(st.integers(0, 2**53), st.sampled_from(["", TRICKY, "é"]))
def test_the_document_read_without_its_forwards_is_the_rest_of_it(sequence: int, text: str) -> None:
    whole = document(sequence, text)
    head = status_document.loads(status_document.dumps(whole), with_forwards=False)
    assert head == dataclasses.replace(whole, forwards=())
    # What is not read is not judged, but the rest still is.
    broken = json.loads(status_document.dumps(whole))
    broken["forwards"] = [{"not": "a forward"}]
    assert status_document.loads(json.dumps(broken).encode(), with_forwards=False) == head
    broken["qubes"] = {"work": {"netvm": "not a qube!"}}
    with pytest.raises(ValidationError, match=r"qubes\.netvm"):
        status_document.loads(json.dumps(broken).encode(), with_forwards=False)


NASTY = ['], "qubes": {}', '], "qubes": {"x": 1}, "sequence": 9, "version": 1}', TRICKY, "\\"]


@given(st.integers(0, 3), st.integers(0, 2**53), st.sampled_from(NASTY))
def test_the_head_is_read_around_the_forwards_whatever_they_say(
    count: int, sequence: int, text: str
) -> None:
    one = document(sequence, text)
    whole = dataclasses.replace(one, forwards=one.forwards * count)
    encoded = status_document.dumps(whole)
    assert status_document.loads(encoded, with_forwards=False) == dataclasses.replace(
        whole, forwards=()
    )
    # The forwards are not even parsed: text that is no JSON there does not matter.
    start = encoded.index(b'"forwards": [') + len(b'"forwards": [')
    end = encoded.rindex(b'], "qubes": ')
    garbled = encoded[:start] + b'{"no": json' + encoded[end:]
    head = status_document.loads(garbled, with_forwards=False)
    assert head == dataclasses.replace(whole, forwards=())
    with pytest.raises(ValidationError):
        status_document.loads(garbled)


@pytest.mark.parametrize("indent", [None, 1])
def test_a_document_laid_out_otherwise_is_read_whole(indent: int | None) -> None:
    whole = document(7, "x")
    value = json.loads(status_document.dumps(whole))
    relaid = json.dumps(dict(reversed(value.items())), indent=indent).encode()
    assert status_document.loads(relaid, with_forwards=False) == dataclasses.replace(
        whole, forwards=()
    )
    broken = relaid.replace(b'"version"', b'"versio"')
    with pytest.raises(ValidationError, match="version"):
        status_document.loads(broken, with_forwards=False)
