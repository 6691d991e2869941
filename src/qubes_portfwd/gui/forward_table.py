"""A read-only table of forwards: one row per forward and IP family, coloured by state."""

from collections.abc import Sequence

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from .rows import FORWARD_HEADER, STATE_COLOUR, ForwardRow

ROW_ID_ROLE = 0x0100  # Qt.UserRole: the forward id kept on each row's first cell


class ForwardTable(QTableWidget):
    """Rows are replaced as a whole on each refresh; the selection follows the forward id."""

    def __init__(self, header: Sequence[str] = FORWARD_HEADER, parent: QWidget | None = None):
        super().__init__(0, len(header), parent)
        self.setHorizontalHeaderLabels(list(header))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().hide()
        self.setAlternatingRowColors(True)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.rows: list[ForwardRow] = []
        self.state_column = list(header).index("State")

    def show_rows(self, rows: Sequence[ForwardRow]) -> None:
        if list(rows) == self.rows:
            return
        selected = self.selected_id()
        self.rows = list(rows)
        self.setRowCount(len(rows))
        for number, row in enumerate(rows):
            for column, text in enumerate(row.cells):
                item = QTableWidgetItem(text)
                item.setToolTip(row.details)
                if column == self.state_column:
                    item.setForeground(QBrush(QColor(STATE_COLOUR[row.state])))
                self.setItem(number, column, item)
            if row.id == selected:
                self.selectRow(number)

    def selected_row(self) -> ForwardRow | None:
        chosen = self.selectionModel().selectedRows()
        if not chosen:
            return None
        return self.rows[chosen[0].row()]

    def selected_id(self) -> str | None:
        row = self.selected_row()
        return row.id if row else None

    def cell_texts(self) -> list[tuple[str, ...]]:
        """What the table shows, row by row (for tests and screenshots)."""
        return [row.cells for row in self.rows]
