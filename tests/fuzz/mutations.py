"""A hypothesis strategy of byte strings near valid inputs: seeds with a few random edits."""

from hypothesis import strategies as st

# Bytes a parser treats specially, so edits hit its branches more often than random bytes.
_INTERESTING = [
    b"\0", b"\n", b"\r\n", b" ", b"=", b",", b"/", b"-", b":", b"%", b"<", b">", b"&", b";",
    b"\xff", b"\xc3\xa9", b"\xef\xbb\xbf", b"0", b"65535", b"65536", b"-1", b"4294967296",
    b"comment=", b"<!DOCTYPE x [<!ENTITY e 'x'>]>", b"&e;", b"]]>", b"\x80",
]  # fmt: skip


@st.composite
def _edit(draw: st.DrawFn, data: bytes, seeds: list[bytes]) -> bytes:
    where = draw(st.integers(0, len(data)))
    kind = draw(st.sampled_from(("insert", "delete", "replace", "repeat", "splice")))
    piece = draw(st.sampled_from(_INTERESTING) | st.binary(min_size=1, max_size=8))
    if kind == "insert":
        return data[:where] + piece + data[where:]
    end = draw(st.integers(where, min(len(data), where + 16)))
    if kind == "delete":
        return data[:where] + data[end:]
    if kind == "replace":
        return data[:where] + piece + data[end:]
    if kind == "repeat":
        return data[:end] + data[where:end] * draw(st.integers(1, 50)) + data[end:]
    other = draw(st.sampled_from(seeds))
    cut = draw(st.integers(0, len(other)))
    return data[:where] + other[cut:]


@st.composite
def near(draw: st.DrawFn, seeds: list[bytes], max_edits: int = 4) -> bytes:
    """A seed after 0 to `max_edits` edits, or (sometimes) bytes with no seed at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, max_edits))):
        data = draw(_edit(data, seeds))
    return data
