"""Every forward on the host: its path drawn hop by hop, inactive ones with reason and Rebind."""

import time
from collections.abc import Sequence

from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..client import AdminClient, ForwardState, ForwardStatus
from .calls import Calls
from .card_column import build_card_column
from .path_widget import PathWidget, path_steps
from .rows import STATE_COLOUR, forward_row

REFRESH_MS = 3000


def title_text(status: ForwardStatus, now: float) -> str:
    """`work · external IPv4 · tcp 80 → 8080 · from any · expires never`."""
    cells = forward_row(status, now).cells
    kind, family, protos, outside, inside, sources, expires, comment = cells[:8]
    ports = outside if outside == inside else f"{outside} → {inside}"
    parts = [status.target, f"{kind} {family}", f"{protos} {ports}", f"from {sources}"]
    parts.append(f"expires {expires}")
    if comment != "-":
        parts.append(f"“{comment}”")
    return "  ·  ".join(parts)


class ForwardCard(QFrame):
    """One forward: a title, the drawn path, and what is wrong with it if anything."""

    def __init__(self, status: ForwardStatus, now: float, on_rebind: object) -> None:
        super().__init__()
        self.status = status
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setObjectName(f"forward_{status.id}_{status.family}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        head = QHBoxLayout()
        title = QLabel(title_text(status, now))
        title.setStyleSheet("font-weight: bold;")
        state = QLabel(str(status.state))
        state.setObjectName("state")
        state.setStyleSheet(f"color: {STATE_COLOUR[status.state]}; font-weight: bold;")
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(state)
        layout.addLayout(head)
        self.path = PathWidget(path_steps(status))
        layout.addWidget(self.path)
        problems = []
        if status.state != ForwardState.ACTIVE and status.reason:
            problems.append(f"{status.state}: {status.reason}")
        for hop in status.hops:
            said = f"{hop.qube}: {hop.error}"
            if hop.error and not any(said in problem for problem in problems):
                problems.append(said)
        self.rebind: QPushButton | None = None
        if problems or status.state == ForwardState.INACTIVE:
            row = QHBoxLayout()
            reason = QLabel("\n".join(problems))
            reason.setObjectName("reason")
            reason.setWordWrap(True)
            row.addWidget(reason, 1)
            if status.state == ForwardState.INACTIVE:
                self.rebind = QPushButton("Rebind to the current path")
                self.rebind.clicked.connect(lambda: on_rebind(status))  # type: ignore[operator]
                row.addWidget(self.rebind)
            layout.addLayout(row)


class OverviewWindow(QWidget):
    def __init__(self, client: AdminClient, refresh_ms: int = REFRESH_MS) -> None:
        super().__init__()
        self.calls = Calls(client, self)
        self.statuses: list[ForwardStatus] = []
        self.cards: list[ForwardCard] = []
        self._refreshing = False
        self.setWindowTitle("Port forwarding overview")
        self.summary = QLabel("Loading…")
        frame = build_card_column(self, self.summary, self.refresh, refresh_ms)
        self.list_layout, self.status, self.timer = frame.cards, frame.status, frame.timer
        self.resize(1000, 640)
        self.refresh()

    def refresh(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        self.calls.run(lambda client: client.forwards(), self._show, self._failed)

    def _failed(self, message: str) -> None:
        self._refreshing = False
        self.status.setText(f"Could not list the forwards: {message}")

    def _show(self, statuses: Sequence[ForwardStatus]) -> None:
        self._refreshing = False
        ordered = sorted(statuses, key=lambda s: (s.target, s.rule, s.family))
        counts = {state: sum(s.state == state for s in ordered) for state in ForwardState}
        shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        self.summary.setText(
            f"{len(ordered)} forward(s) on this host" + (f": {shown}" if shown else "")
        )
        if ordered == self.statuses:
            return
        self.statuses = ordered
        for card in self.cards:
            self.list_layout.removeWidget(card)
            card.deleteLater()
        now = time.time()
        self.cards = [ForwardCard(status, now, self.rebind) for status in ordered]
        for number, card in enumerate(self.cards):
            self.list_layout.insertWidget(number, card)
            card.show()  # now, not at the next event loop turn (a grab may come first)

    def card(self, forward_id: str, family: int = 4) -> ForwardCard | None:
        return next(
            (c for c in self.cards if c.status.id == forward_id and c.status.family == family),
            None,
        )

    def rebind(self, status: ForwardStatus) -> None:
        self.status.setText(f"Rebinding {status.id} to {status.target}'s current path…")

        def done(_: object) -> None:
            self.status.setText(f"Rebound {status.id}")
            self.refresh()

        self.calls.run(
            lambda client: client.rebind(status.target, status.id),
            done,
            lambda message: self.status.setText(f"Rebind failed: {message}"),
        )

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        self.calls.close()
        super().closeEvent(event)
