"""The frame the overview and the prompt share: a header line, a scrolling column of cards,
a status line, and a timer that keeps the column fresh."""

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget


@dataclass
class CardColumn:
    cards: QVBoxLayout  # insert cards before its final stretch
    status: QLabel
    timer: QTimer


def build_card_column(
    window: QWidget, header: QLabel, refresh: Callable[[], None], refresh_ms: int
) -> CardColumn:
    """Lay `window` out as header / cards / status and call `refresh` every `refresh_ms`."""
    layout = QVBoxLayout(window)
    layout.addWidget(header)
    column = QWidget()
    cards = QVBoxLayout(column)
    cards.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(column)
    layout.addWidget(scroll, 1)
    status = QLabel("")
    status.setWordWrap(True)
    layout.addWidget(status)
    timer = QTimer(window)
    timer.timeout.connect(refresh)
    timer.start(refresh_ms)
    return CardColumn(cards, status, timer)
