"""The add/edit outbound rule dialog: checks as the user types, each message by its field."""

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from ..model.rule import FilterRule
from .outbound_form import (
    ADDRESS,
    COMMENT,
    GENERAL,
    PORTS,
    PROTO_CHOICES,
    OutboundCheck,
    OutboundForm,
    check_outbound,
)

ERROR_STYLE = "color: #c62828;"
FIELD_WIDTH = 360


def _error_label(name: str) -> QLabel:
    label = QLabel()
    label.setObjectName(f"error_{name}")
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.hide()
    return label


class OutboundDialog(QDialog):
    """`rule()` is the rule to list once accepted; OK is enabled only for a valid form."""

    def __init__(
        self, qube: str, form: OutboundForm | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        editing = form is not None
        form = form or OutboundForm()
        self.setWindowTitle(f"{'Edit' if editing else 'Add'} an allowed destination of {qube}")
        self.address = QLineEdit(form.untrusted_address, objectName="address")
        self.address.setPlaceholderText("www.example.com, 192.168.1.100, 192.168.0.0/16 or *")
        self.proto = QComboBox(objectName="proto")
        self.proto.addItems(list(PROTO_CHOICES))
        self.proto.setCurrentText(form.proto)
        self.ports = QLineEdit(form.untrusted_ports, objectName="ports")
        self.ports.setPlaceholderText("443 or 1024-1234 (tcp/udp; empty: all ports)")
        self.comment = QLineEdit(form.untrusted_comment, objectName="comment")
        self.errors = {name: _error_label(name) for name in (ADDRESS, PORTS, COMMENT, GENERAL)}
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QFormLayout()

        def row(label: str, widget: QWidget, error: str) -> None:
            box = QVBoxLayout()
            box.setSpacing(2)
            box.addWidget(widget)
            box.addWidget(self.errors[error])
            layout.addRow(label, box)

        row("Address:", self.address, ADDRESS)
        layout.addRow("Protocol:", self.proto)
        row("Port(s):", self.ports, PORTS)
        row("Comment:", self.comment, COMMENT)
        outer = QVBoxLayout(self)
        outer.addLayout(layout)
        outer.addWidget(self.errors[GENERAL])
        outer.addWidget(self.buttons)
        for line_edit in (self.address, self.ports, self.comment):
            line_edit.setMinimumWidth(FIELD_WIDTH)
            line_edit.textChanged.connect(self.recheck)
        self.proto.currentTextChanged.connect(self.recheck)
        self.check = self.recheck()

    def form(self) -> OutboundForm:
        return OutboundForm(
            untrusted_address=self.address.text(),
            proto=self.proto.currentText(),
            untrusted_ports=self.ports.text(),
            untrusted_comment=self.comment.text(),
        )

    def recheck(self) -> OutboundCheck:
        """Check the whole form; show each field's message, enable OK when valid."""
        self.ports.setEnabled(self.proto.currentText() != "any" or bool(self.ports.text()))
        self.check = check_outbound(self.form())
        for name, label in self.errors.items():
            message = self.check.errors.get(name)
            label.setText(message or "")
            label.setVisible(message is not None)
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(self.check.rule is not None)
        self.layout().activate()
        self.resize(self.width(), self.sizeHint().height())
        return self.check

    def rule(self) -> FilterRule | None:
        return check_outbound(self.form()).rule
