"""The Firewall tab's top half: a qube's outbound rules, as Qubes' settings tab offers them.

Changes stay in the window until Apply, which stores them with a guarded write over the list
the window read (outbound_save.py); a list the tab cannot represent is shown read-only.
"""

import time
from collections.abc import Callable, Sequence

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..model.firewall_revision import rules_text
from ..model.rule import FilterRule
from .calls import Calls
from .outbound_conf import (
    ConfRead,
    OutboundConf,
    conf_lines,
    full_access_minutes,
    read_conf,
    read_only_rows,
)
from .outbound_dialog import OutboundDialog
from .outbound_form import form_of_outbound, outbound_cells
from .outbound_save import save_rules
from .rows import OUTBOUND_HEADER

RULES_HEADER = ("Address", "Protocol", "Port(s)", "Comment")
READ_ONLY_HEADER = (*OUTBOUND_HEADER, "Why it blocks editing")
MAX_FULL_ACCESS_MINUTES = 24 * 60
DEFAULT_FULL_ACCESS_MINUTES = 5
BLOCKER_COLOUR = "#c62828"
NOTICE_STYLE = f"color: {BLOCKER_COLOUR};"


def _table(header: Sequence[str]) -> QTableWidget:
    table = QTableWidget(0, len(header))
    table.setHorizontalHeaderLabels(list(header))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def _fill(table: QTableWidget, rows: Sequence[Sequence[str]]) -> None:
    table.setRowCount(len(rows))
    for number, cells in enumerate(rows):
        for column, text in enumerate(cells):
            table.setItem(number, column, QTableWidgetItem(text))


class OutboundPanel(QGroupBox):
    """`show_lines(lines)` after each refresh; `saved` is called after a stored change."""

    def __init__(self, calls: Calls, qube: str, saved: Callable[[], None]) -> None:
        super().__init__("Outbound rules")
        self.calls = calls
        self.qube = qube
        self.saved = saved
        self.read_lines: tuple[str, ...] | None = None  # the list the widgets were set from
        self.read: ConfRead | None = None
        self.rules: list[FilterRule] = []
        self.full_access_until: int | None = None
        self.full_access_touched = False
        self.saving = False
        # Bumped when a save starts and ends: a read begun before then is out of date.
        self.generation = 0
        self.dialog: OutboundDialog | None = None
        self._build()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.allow_all = QRadioButton("Allow all outgoing connections", objectName="allow_all")
        self.limit = QRadioButton("Limit outgoing connections to …", objectName="limit")
        for radio in (self.allow_all, self.limit):
            radio.toggled.connect(self._changed)
            layout.addWidget(radio)
        self.rules_label = QLabel("Allowed destinations (DNS names, addresses, networks):")
        layout.addWidget(self.rules_label)
        self.table = _table(RULES_HEADER)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.itemSelectionChanged.connect(self._update_controls)
        self.read_only = _table(READ_ONLY_HEADER)
        self.read_only.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.read_only.hide()
        layout.addWidget(self.table, 1)
        layout.addWidget(self.read_only, 1)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add…", objectName="add_rule")
        self.edit_button = QPushButton("Edit…", objectName="edit_rule")
        self.remove_button = QPushButton("Remove", objectName="remove_rule")
        self.add_button.clicked.connect(self.open_add_dialog)
        self.edit_button.clicked.connect(self.open_edit_dialog)
        self.remove_button.clicked.connect(self.remove_selected)
        self.allow_dns = QCheckBox("Allow DNS queries", objectName="allow_dns")
        self.allow_icmp = QCheckBox("Allow ICMP (ping)", objectName="allow_icmp")
        self.full_access = QCheckBox("Allow full access for", objectName="full_access")
        self.minutes = QSpinBox(objectName="full_access_minutes")
        self.minutes.setRange(1, MAX_FULL_ACCESS_MINUTES)
        self.minutes.setValue(DEFAULT_FULL_ACCESS_MINUTES)
        self.minutes.setSuffix(" min")
        for checkbox in (self.allow_dns, self.allow_icmp, self.full_access):
            checkbox.toggled.connect(self._changed)
        self.full_access.toggled.connect(self._touch_full_access)
        self.minutes.valueChanged.connect(self._touch_full_access)
        for widget in (self.add_button, self.edit_button, self.remove_button):
            buttons.addWidget(widget)
        buttons.addSpacing(24)
        for widget in (self.allow_dns, self.allow_icmp, self.full_access, self.minutes):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.notice = QLabel("", objectName="outbound_notice")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet(NOTICE_STYLE)
        self.notice.hide()
        layout.addWidget(self.notice)
        bottom = QHBoxLayout()
        self.state = QLabel("Changes do not affect connections already open.")
        self.state.setWordWrap(True)
        self.discard_button = QPushButton("Discard", objectName="discard")
        self.apply_button = QPushButton("Apply", objectName="apply")
        self.discard_button.clicked.connect(self.discard)
        self.apply_button.clicked.connect(self.apply)
        bottom.addWidget(self.state, 1)
        bottom.addWidget(self.discard_button)
        bottom.addWidget(self.apply_button)
        layout.addLayout(bottom)
        self._update_controls()

    # -- what the service holds --

    def show_lines(self, lines: Sequence[str], generation: int) -> None:
        """The list as read in `generation`: taken over unless the user has unsaved changes."""
        if generation != self.generation or self.saving:
            return
        lines = tuple(lines)
        if self.read_lines is not None and self.has_changes():
            if rules_text(lines) != rules_text(self.read_lines):
                self._notice(
                    f"{self.qube}'s rules were changed elsewhere since this window read them:"
                    " Apply will refuse; Discard shows the current rules."
                )
            return
        self._adopt(lines)

    def _adopt(self, lines: tuple[str, ...]) -> None:
        self.read_lines = lines
        self.read = read_conf(lines)
        conf = self.read.conf
        self._notice("")
        if conf is None:
            self._show_read_only(lines)
            return
        self.table.show()
        self.read_only.hide()
        self.rules = list(conf.rules)
        self.full_access_until = conf.full_access_until
        widgets = (self.allow_all, self.limit, self.allow_dns, self.allow_icmp, self.full_access)
        for widget in (*widgets, self.minutes):
            widget.blockSignals(True)
        self.allow_all.setChecked(conf.allow_all)
        self.limit.setChecked(not conf.allow_all)
        # Allowed by default when the user limits a list that allowed everything.
        self.allow_dns.setChecked(conf.allow_dns or conf.allow_all)
        self.allow_icmp.setChecked(conf.allow_icmp or conf.allow_all)
        left = full_access_minutes(conf.full_access_until, time.time())
        self.full_access.setChecked(left is not None)
        self.minutes.setValue(left or DEFAULT_FULL_ACCESS_MINUTES)
        for widget in (*widgets, self.minutes):
            widget.blockSignals(False)
        self.full_access_touched = False
        self._show_rules()
        self._update_controls()

    def _show_read_only(self, lines: tuple[str, ...]) -> None:
        assert self.read is not None
        self.table.hide()
        self.read_only.show()
        rows = read_only_rows(lines, self.read.blockers, time.time())
        _fill(self.read_only, rows)
        for number, cells in enumerate(rows):
            if cells[-1]:  # the rules that block editing stand out
                for column in range(len(cells)):
                    self.read_only.item(number, column).setForeground(QColor(BLOCKER_COLOUR))
        count = len(self.read.blockers)
        self._notice(
            f"These rules were made outside this tab and it cannot show them as its choices, so"
            f" the list is read-only here (change it with qvm-firewall). {count} rule(s) block"
            " editing; each says why in the last column."
        )
        self._update_controls()

    # -- the user's changes --

    def editable(self) -> bool:
        return self.read is not None and self.read.conf is not None

    def current_conf(self, now: float) -> OutboundConf:
        # Untouched, the stored full access stays as it is (even past: Qubes drops it itself).
        until = self.full_access_until
        if self.full_access_touched:
            until = int(now) + self.minutes.value() * 60 if self.full_access.isChecked() else None
        return OutboundConf(
            allow_all=self.allow_all.isChecked(),
            rules=tuple(self.rules),
            allow_dns=self.allow_dns.isChecked(),
            allow_icmp=self.allow_icmp.isChecked(),
            full_access_until=until,
        )

    def new_lines(self, now: float) -> list[str]:
        assert self.read is not None
        return conf_lines(self.current_conf(now), self.read.kept)

    def has_changes(self) -> bool:
        if not self.editable() or self.read_lines is None:
            return False
        return rules_text(self.new_lines(time.time())) != rules_text(self.read_lines)

    def _touch_full_access(self) -> None:
        self.full_access_touched = True
        self._changed()

    def _changed(self) -> None:
        self._update_controls()

    def _show_rules(self) -> None:
        _fill(self.table, [outbound_cells(rule) for rule in self.rules])

    def selected(self) -> int | None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        return next(iter(rows)) if len(rows) == 1 else None

    def open_add_dialog(self) -> OutboundDialog:
        dialog = OutboundDialog(self.qube, parent=self)
        dialog.accepted.connect(lambda: self._put(dialog, None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def open_edit_dialog(self) -> OutboundDialog | None:
        number = self.selected()
        if number is None:
            return None
        original = self.rules[number]
        dialog = OutboundDialog(self.qube, form_of_outbound(original), parent=self)
        dialog.accepted.connect(lambda: self._put(dialog, original))
        self.dialog = dialog
        dialog.open()
        return dialog

    def _put(self, dialog: OutboundDialog, original: FilterRule | None) -> None:
        rule = dialog.rule()
        if rule is None:
            return
        if original is None:
            self.rules.append(rule)
        elif original in self.rules:
            self.rules[self.rules.index(original)] = rule
        else:  # the list was read again while the dialog was open
            self._notice("The rule being edited is no longer listed; nothing was changed.")
            return
        self._show_rules()
        self._update_controls()

    def remove_selected(self) -> None:
        number = self.selected()
        if number is not None:
            del self.rules[number]
            self._show_rules()
            self._update_controls()

    def discard(self) -> None:
        self._notice("")
        self.full_access_touched = False
        self.read_lines = None  # the next refresh is taken over whatever it holds
        self.saved()

    def apply(self) -> None:
        """Store the changes over the list read; a concurrent change is shown, not lost."""
        if not self.has_changes() or self.saving or self.read_lines is None:
            return
        read_lines, new_lines, qube = self.read_lines, self.new_lines(time.time()), self.qube
        self.saving = True
        self.generation += 1
        self.state.setText("Saving the outbound rules…")
        self._update_controls()

        def done(stored: list[str]) -> None:
            self.saving = False
            self.generation += 1
            self.state.setText("Outbound rules saved.")
            self._adopt(tuple(stored))
            self.saved()

        def failed(message: str) -> None:
            self.saving = False
            self.generation += 1
            self.state.setText("Outbound rules not saved.")
            self._notice(message)
            self._update_controls()

        self.calls.run(lambda c: save_rules(c, qube, read_lines, new_lines), done, failed)

    # -- showing --

    def _notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def _update_controls(self) -> None:
        editable = self.editable() and not self.saving
        limited = editable and self.limit.isChecked()
        for widget in (self.allow_all, self.limit):
            widget.setEnabled(editable)
        for widget in (self.rules_label, self.table, self.add_button):
            widget.setEnabled(limited)
        chosen = limited and self.selected() is not None
        self.edit_button.setEnabled(chosen)
        self.remove_button.setEnabled(chosen)
        for widget in (self.allow_dns, self.allow_icmp, self.full_access):
            widget.setEnabled(limited)
        self.minutes.setEnabled(limited and self.full_access.isChecked())
        changes = editable and self.has_changes()
        self.apply_button.setEnabled(changes)
        self.discard_button.setEnabled(not self.saving)
        # With nothing to discard, the button reads the list again.
        self.discard_button.setText("Discard" if changes else "Reload")
        marker = " (unsaved changes)" if changes else ""
        self.setTitle(f"Outbound rules of {self.qube}{marker}")
