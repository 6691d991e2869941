"""A forward's path drawn as boxes (origin → edge → … → target), each hop coloured by state."""

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..model.forward_status import ForwardStatus, HopState, parsed_rule
from .rows import HOP_COLOUR, is_internal

ORIGIN_COLOUR = "#1565c0"
PAD_X = 10
PAD_Y = 5
GAP = 34
ROUND = 6


@dataclass(frozen=True)
class PathStep:
    """One box of the drawing: its words and its colour (a hop's state, or the origin's)."""

    label: str
    colour: str
    state: HopState | None = None


def path_steps(status: ForwardStatus) -> list[PathStep]:
    """`LAN → sys-net → sys-firewall → work:8080`, or the named qubes for an internal forward."""
    rule = parsed_rule(status)
    if rule is not None and is_internal(status):
        origin = ",".join(rule.source_qubes)
    elif status.public:
        origin = "VPN " + ",".join(p.text for p in status.public)
    else:
        origin = "LAN"
    steps = [PathStep(origin, ORIGIN_COLOUR)]
    for hop in status.hops:
        label = f"{hop.qube}:{rule.dstports.short}" if hop.role == "target" and rule else hop.qube
        steps.append(PathStep(f"{label} · {hop.state}", HOP_COLOUR[hop.state], hop.state))
    return steps


class PathWidget(QWidget):
    def __init__(self, steps: Sequence[PathStep], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.steps = list(steps)
        self.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self.setToolTip(" → ".join(step.label for step in self.steps))

    def _box_widths(self) -> list[int]:
        metrics = QFontMetrics(self.font())
        return [metrics.horizontalAdvance(step.label) + 2 * PAD_X for step in self.steps]

    def sizeHint(self) -> QSize:
        height = QFontMetrics(self.font()).height() + 2 * PAD_Y + 2
        width = sum(self._box_widths()) + GAP * max(0, len(self.steps) - 1) + 2
        return QSize(width, height)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        height = QFontMetrics(self.font()).height() + 2 * PAD_Y
        x = 1.0
        for number, (step, width) in enumerate(zip(self.steps, self._box_widths(), strict=True)):
            box = QRectF(x, 1, width, height)
            colour = QColor(step.colour)
            painter.setPen(QPen(colour.darker(130), 1.5))
            painter.setBrush(colour)
            painter.drawRoundedRect(box, ROUND, ROUND)
            painter.setPen(QColor("white"))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, step.label)
            x += width
            if number < len(self.steps) - 1:
                middle = 1 + height / 2
                painter.setPen(QPen(QColor("#424242"), 2))
                painter.drawLine(int(x + 4), int(middle), int(x + GAP - 6), int(middle))
                painter.drawLine(int(x + GAP - 11), int(middle - 5), int(x + GAP - 6), int(middle))
                painter.drawLine(int(x + GAP - 11), int(middle + 5), int(x + GAP - 6), int(middle))
                x += GAP
        painter.end()
