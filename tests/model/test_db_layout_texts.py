"""The QubesDB path and text rules of `model.db_layout`, against their definitions written
one character at a time (the module answers by regular expression, for speed)."""

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.model.db_layout import (
    MAX_PATH,
    MAX_TEXT,
    decode_text,
    text_value,
    valid_path,
)

ALLOWED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/.:@"
# Mostly path-like text, with the characters on either side of each allowed range.
PATHISH = st.text(alphabet=st.sampled_from(ALLOWED + " \n\t\x00é`[{,;~\x7f"), max_size=70)


def _valid_path_by_characters(path: str) -> bool:
    return path.startswith("/") and len(path) <= MAX_PATH and all(c in ALLOWED for c in path)


def _printable(text: str, replacement: str) -> str:
    return "".join(c if " " <= c <= "~" else replacement for c in text)


@given(PATHISH | st.text(max_size=70))
def test_valid_path_is_slash_rooted_short_and_of_qubesdb_characters(path: str) -> None:
    assert valid_path(path) == _valid_path_by_characters(path)


def test_valid_path_limits() -> None:
    assert valid_path("/")
    assert valid_path("/" + "a" * (MAX_PATH - 1))
    assert not valid_path("/" + "a" * MAX_PATH)
    assert not valid_path("/a\n")
    assert not valid_path("a/b")
    assert not valid_path("")


@given(st.binary(max_size=MAX_TEXT + 20) | st.text(max_size=40).map(str.encode))
def test_decode_text_shows_printable_ascii_and_marks_the_rest(value: bytes) -> None:
    expected = _printable(value[: MAX_TEXT + 3].decode("ascii", errors="replace"), "?")
    assert decode_text(value) == expected


@given(st.text(max_size=MAX_TEXT + 20))
def test_text_value_is_printable_ascii_capped(text: str) -> None:
    printable = _printable(text, " ")
    if len(printable) > MAX_TEXT:
        printable = printable[: MAX_TEXT - 3] + "..."
    assert text_value(text) == printable.encode("ascii")
