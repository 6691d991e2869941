"""dom0's prompt for NAT traversal requests waiting under the ask policy.

Allow once approves the request; Allow always first puts `ports=PORT action=allow` at the top
of the qube's NAT policy, then approves; Deny refuses it.
"""

from collections.abc import Sequence

from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..client import AdminClient
from ..model.errors import ValidationError
from .calls import Calls
from .card_column import build_card_column
from .pending_ask import PendingAsk, always_policy, duration_text, parse_pending, question

POLL_MS = 1000


def fetch_pending(client: AdminClient) -> list[PendingAsk]:
    asks = []
    for untrusted_fields in client.nat_pending():
        try:
            asks.append(parse_pending(untrusted_fields))
        except ValidationError:
            continue  # a line this prompt cannot show is left to `qvm-portfwd pending`
    return asks


def allow_always(client: AdminClient, ask: PendingAsk) -> dict[str, str]:
    client.nat_policy_set(ask.qube, always_policy(client.nat_policy_get(ask.qube), ask.port))
    return client.nat_approve(ask.id)


class AskCard(QFrame):
    """One request: who asks what, and the three answers."""

    def __init__(self, ask: PendingAsk, window: "PromptWindow") -> None:
        super().__init__()
        self.ask = ask
        self.setObjectName(f"ask_{ask.id}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        headline = QLabel(question(ask))
        headline.setWordWrap(True)
        headline.setStyleSheet("font-weight: bold; font-size: 11pt;")
        layout.addWidget(headline)
        details = [
            f"Protocol: {ask.proto.upper()}",
            f"Outside port: {ask.port}",
            f"Port in {ask.qube}: {ask.internal_port}",
            f"Asked with: {ask.origin or 'unknown'}",
            f"Application says: {ask.description or '(no description)'}",
            f"Lifetime: {duration_text(ask.lifetime)}",
        ]
        body = QLabel("\n".join(details))
        body.setObjectName("details")
        layout.addWidget(body)
        self.countdown = QLabel(self._countdown(ask))
        layout.addWidget(self.countdown)
        buttons = QHBoxLayout()
        self.allow_once = QPushButton("Allow once")
        self.allow_always = QPushButton(f"Always allow {ask.qube} port {ask.port}")
        self.deny = QPushButton("Deny")
        self.allow_once.clicked.connect(lambda: window.answer(ask, "allow"))
        self.allow_always.clicked.connect(lambda: window.answer(ask, "always"))
        self.deny.clicked.connect(lambda: window.answer(ask, "deny"))
        buttons.addStretch(1)
        for button in (self.deny, self.allow_once, self.allow_always):
            buttons.addWidget(button)
        layout.addLayout(buttons)

    @staticmethod
    def _countdown(ask: PendingAsk) -> str:
        return f"Unanswered, this request is refused in {duration_text(ask.expires_in)}."

    def update_countdown(self, ask: PendingAsk) -> None:
        self.countdown.setText(self._countdown(ask))

    def set_busy(self) -> None:
        for button in (self.allow_once, self.allow_always, self.deny):
            button.setEnabled(False)


class PromptWindow(QWidget):
    def __init__(self, client: AdminClient, poll_ms: int = POLL_MS) -> None:
        super().__init__()
        self.calls = Calls(client, self)
        self.asks: list[PendingAsk] = []
        self.cards: list[AskCard] = []
        self._polling = False
        self.setWindowTitle("Port forwarding requests")
        self.empty = QLabel("No qube is asking to open a port.")
        frame = build_card_column(self, self.empty, self.poll, poll_ms)
        self.list_layout, self.status, self.timer = frame.cards, frame.status, frame.timer
        self.resize(660, 280)
        self.poll()

    def poll(self) -> None:
        if self._polling:
            return
        self._polling = True
        self.calls.run(fetch_pending, self._show, self._failed)

    def _failed(self, message: str) -> None:
        self._polling = False
        self.status.setText(f"Could not read the requests: {message}")

    def _show(self, asks: Sequence[PendingAsk]) -> None:
        self._polling = False
        # The countdown changes every poll; the cards are rebuilt only when the set changes.
        if [a.id for a in asks] == [a.id for a in self.asks]:
            for card, ask in zip(self.cards, asks, strict=True):
                card.update_countdown(ask)
            return
        self.asks = list(asks)
        for card in self.cards:
            self.list_layout.removeWidget(card)
            card.deleteLater()
        self.cards = [AskCard(ask, self) for ask in asks]
        for number, card in enumerate(self.cards):
            self.list_layout.insertWidget(number, card)
            card.show()  # now, not at the next event loop turn (a grab may come first)
        self.empty.setVisible(not asks)
        if asks:
            self.raise_()

    def card(self, request_id: str) -> AskCard | None:
        return next((c for c in self.cards if c.ask.id == request_id), None)

    def answer(self, ask: PendingAsk, choice: str) -> None:
        card = self.card(ask.id)
        if card is not None:
            card.set_busy()
        if choice == "deny":
            work = lambda client: client.nat_deny(ask.id)  # noqa: E731
            said = "Denied"
        elif choice == "always":
            work = lambda client: allow_always(client, ask)  # noqa: E731
            said = f"Allowed, and always allowed from now on for {ask.qube} port {ask.port}"
        else:
            work = lambda client: client.nat_approve(ask.id)  # noqa: E731
            said = "Allowed once"

        def done(_: object) -> None:
            self.status.setText(f"{said}: {ask.qube} {ask.proto} port {ask.port}")
            self.poll()

        def failed(message: str) -> None:
            self.status.setText(f"Answering {ask.qube}'s request failed: {message}")
            self.poll()

        self.calls.run(work, done, failed)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        self.calls.close()
        super().closeEvent(event)
