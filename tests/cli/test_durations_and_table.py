"""Durations as people write them, countdowns, and column alignment."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.cli.durations import parse_duration
from qubes_portfwd.cli.table import format_table
from qubes_portfwd.model.countdown import countdown_text
from qubes_portfwd.model.errors import ValidationError


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("45", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration("--for", text) == seconds


@pytest.mark.parametrize("text", ["", "0", "5w", "-5m", "1.5h", "10 m", "9999d", "\uff11m"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration("--for", text)
    assert caught.value.field == "--for"
    assert "30s, 10m, 2h or 1d" in caught.value.message or "out of range" in caught.value.message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "expired"),
        (-3, "expired"),
        (45, "45s"),
        (598.9, "9m58s"),
        (7200, "2h00m"),
        (273600, "3d04h"),
    ],
)
def test_countdowns(seconds: float, text: str) -> None:
    assert countdown_text(seconds) == text


def test_columns_are_aligned_two_spaces_apart() -> None:
    assert format_table([["NO", "ACTION"], ["0", "accept"], ["10", "drop"]]) == [
        "NO  ACTION",
        "0   accept",
        "10  drop",
    ]


@given(st.lists(st.lists(st.text("abc-xyz", max_size=6), min_size=3, max_size=3), min_size=1))
def test_every_column_starts_at_the_same_place(rows: list[list[str]]) -> None:
    lines = format_table(rows)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for line, row in zip(lines, rows, strict=True):
        assert line.startswith(row[0])
        assert line[widths[0] + 2 :].startswith(row[1])
        assert line[widths[0] + widths[1] + 4 :].startswith(row[2])
