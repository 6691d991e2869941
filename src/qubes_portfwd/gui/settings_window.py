"""A qube's settings window, its firewall tab: outbound rules (outbound_panel.py) on top,
port forwarding below, and (for a network qube) the ports forwarded through it."""

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from PySide6.QtCore import QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..client import AdminClient, ForwardStatus
from ..model.forward_status import parsed_rule
from ..model.rule import ForwardRule
from .calls import Calls
from .forward_dialog import ForwardDialog
from .forward_form import form_of_rule
from .forward_table import ForwardTable
from .outbound_panel import OutboundPanel
from .rows import FORWARD_HEADER, forward_rows

REFRESH_MS = 3000
THROUGH_HEADER = ("Target", *FORWARD_HEADER)


@dataclass(frozen=True)
class QubeView:
    """Everything the tab shows, fetched in one go off the GUI thread."""

    rule_lines: tuple[str, ...]
    forwards: tuple[ForwardStatus, ...]
    is_network: bool
    through: tuple[ForwardStatus, ...]


def fetch_view(client: AdminClient, qube: str) -> QubeView:
    is_network = client.get_property(qube, "provides_network").value == "True"
    return QubeView(
        rule_lines=tuple(client.firewall_get(qube)),
        forwards=tuple(client.forwards_of(qube)),
        is_network=is_network,
        through=tuple(client.forwards_through(qube)) if is_network else (),
    )


class SettingsWindow(QWidget):
    """`qube`'s settings with the one tab this project adds to: "Firewall rules"."""

    def __init__(self, client: AdminClient, qube: str, refresh_ms: int = REFRESH_MS) -> None:
        super().__init__()
        self.qube = qube
        self.calls = Calls(client, self)
        self.view: QubeView | None = None
        self.dialog: ForwardDialog | None = None
        self._refreshing = False
        self.setWindowTitle(f"{qube}: Qube Settings")
        tabs = QTabWidget()
        tabs.addTab(self._firewall_tab(), "Firewall rules")
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        self.resize(1180, 760)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(refresh_ms)
        self.refresh()

    def _firewall_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        self.outbound = OutboundPanel(self.calls, self.qube, self.refresh)
        layout.addWidget(self.outbound, 3)

        forwarding = QGroupBox(f"Port forwarding to {self.qube}")
        self.forwarding_box = forwarding
        forwarding_layout = QVBoxLayout(forwarding)
        self.forwards = ForwardTable()
        self.forwards.itemSelectionChanged.connect(self._update_buttons)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add…")
        self.edit_button = QPushButton("Edit…")
        self.remove_button = QPushButton("Remove")
        self.add_button.clicked.connect(self.open_add_dialog)
        self.edit_button.clicked.connect(self.open_edit_dialog)
        self.remove_button.clicked.connect(self.confirm_remove)
        for button in (self.add_button, self.edit_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        forwarding_layout.addWidget(self.forwards)
        forwarding_layout.addLayout(buttons)
        layout.addWidget(forwarding, 3)

        self.through_box = QGroupBox(f"Ports forwarded through {self.qube}")
        through_layout = QVBoxLayout(self.through_box)
        self.through = ForwardTable(THROUGH_HEADER)
        through_layout.addWidget(self.through)
        self.through_box.hide()
        layout.addWidget(self.through_box, 2)

        self.status = QLabel("Loading…")
        self.status.setProperty("stale", True)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self._update_buttons()
        return tab

    # -- refreshing --

    def refresh(self) -> None:
        """Fetch again unless a fetch is under way (the timer never piles calls up)."""
        if self._refreshing:
            return
        self._refreshing = True
        qube, generation = self.qube, self.outbound.generation
        self.calls.run(
            lambda client: fetch_view(client, qube),
            lambda view: self._show(view, generation),
            self._refresh_failed,
        )

    def _show(self, view: QubeView, generation: int) -> None:
        self._refreshing = False
        self.view = view
        now = time.time()
        self.outbound.show_lines(view.rule_lines, generation)
        self.forwards.show_rows(forward_rows(view.forwards, now))
        through = [
            replace(row, cells=(row.target, *row.cells)) for row in forward_rows(view.through, now)
        ]
        self.through.show_rows(through)
        self.through_box.setVisible(view.is_network)
        self.forwarding_box.setTitle(f"Port forwarding to {self.qube} ({len(view.forwards)})")
        self.through_box.setTitle(f"Ports forwarded through {self.qube} ({len(view.through)})")
        if self.status.property("stale"):
            self._say("")
        self._update_buttons()

    def _refresh_failed(self, message: str) -> None:
        self._refreshing = False
        self._say(f"Could not load {self.qube}'s rules: {message}", stale=True)

    def _say(self, text: str, stale: bool = False) -> None:
        self.status.setText(text)
        self.status.setProperty("stale", stale)

    def _update_buttons(self) -> None:
        chosen = self.forwards.selected_row() is not None
        self.edit_button.setEnabled(chosen)
        self.remove_button.setEnabled(chosen)

    # -- changes --

    def _status_of(self, forward_id: str) -> ForwardStatus | None:
        if self.view is None:
            return None
        return next((s for s in self.view.forwards if s.id == forward_id), None)

    def _change(self, what: str, work: Callable[[AdminClient], object]) -> None:
        self._say(f"{what}…")

        def done(result: object) -> None:
            self._say(f"{what}: done" + (f" (id {result})" if isinstance(result, str) else ""))
            self.refresh()

        self.calls.run(work, done, lambda message: self._say(f"{what} failed: {message}"))

    def open_add_dialog(self) -> ForwardDialog:
        """Opens the dialog (not modal to the event loop); OK sends the forward."""
        dialog = ForwardDialog(self.qube, parent=self)
        qube = self.qube

        def submit() -> None:
            line = dialog.line(time.time())
            if line is not None:
                self._change("Adding the forward", lambda c: c.add_forward(qube, line))

        dialog.accepted.connect(submit)
        self.dialog = dialog
        dialog.open()
        return dialog

    def open_edit_dialog(self) -> ForwardDialog | None:
        forward_id = self.forwards.selected_id()
        status = self._status_of(forward_id) if forward_id else None
        rule = parsed_rule(status) if status else None
        if forward_id is None or not isinstance(rule, ForwardRule):
            return None
        dialog = ForwardDialog(self.qube, form_of_rule(rule, time.time()), parent=self)
        qube = self.qube

        def submit() -> None:
            line = dialog.line(time.time())
            if line is None:
                return

            def swap(client: AdminClient) -> None:
                # One feature per forward: no list is read and written back, nothing is lost.
                client.replace_forward(qube, forward_id, line)

            self._change("Changing the forward", swap)

        dialog.accepted.connect(submit)
        self.dialog = dialog
        dialog.open()
        return dialog

    def confirm_remove(self) -> QMessageBox | None:
        forward_id = self.forwards.selected_id()
        if forward_id is None:
            return None
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Remove port forward",
            f"Remove forward {forward_id} to {self.qube}? Its open connections end.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        yes = QMessageBox.StandardButton.Yes

        def answered(button: QAbstractButton) -> None:
            if box.standardButton(button) == yes:
                self.remove(forward_id)

        box.buttonClicked.connect(answered)
        box.open()
        return box

    def remove(self, forward_id: str) -> None:
        qube = self.qube
        self._change("Removing the forward", lambda c: c.remove_forward(qube, forward_id))

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        self.calls.close()
        super().closeEvent(event)
