"""The add/edit forward dialog: checks as the user types, each message next to its field."""

import time

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..model.rule import ForwardType
from .forward_form import (
    COMMENT,
    GENERAL,
    MAX_MINUTES,
    MINUTES,
    OUTSIDE_PORTS,
    PROTO_CHOICES,
    QUBE_PORTS,
    SOURCES,
    Expiry,
    FormCheck,
    ForwardForm,
    check_form,
)

ERROR_STYLE = "color: #c62828;"
FIELD_WIDTH = 420
SOURCE_HINT = {
    ForwardType.EXTERNAL: "any, or networks: 192.0.2.0/24,198.51.100.7",
    ForwardType.INTERNAL: "the qubes that may connect: personal,vault",
}


def _error_label(name: str) -> QLabel:
    label = QLabel()
    label.setObjectName(f"error_{name}")
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.hide()
    return label


class ForwardDialog(QDialog):
    """`line(now)` is the rule to send once accepted; OK is enabled only for a valid form."""

    def __init__(self, qube: str, form: ForwardForm | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        editing = form is not None
        form = form or ForwardForm()
        self.via = form.via
        self.setWindowTitle(f"{'Edit' if editing else 'Add'} port forward to {qube}")
        self.forwardtype = QComboBox(objectName="forwardtype")
        self.forwardtype.addItems([str(t) for t in ForwardType])
        self.forwardtype.setCurrentText(str(form.forwardtype))
        self.proto = QComboBox(objectName="proto")
        self.proto.addItems(list(PROTO_CHOICES))
        self.proto.setCurrentText(form.proto)
        self.outside_ports = QLineEdit(form.untrusted_outside_ports, objectName="outside_ports")
        self.outside_ports.setPlaceholderText("8080 or 6000-6010")
        self.qube_ports = QLineEdit(form.untrusted_qube_ports, objectName="qube_ports")
        self.qube_ports.setPlaceholderText("same as outside")
        self.sources = QLineEdit(form.untrusted_sources, objectName="sources")
        self.expiry = QComboBox(objectName="expiry")
        self.expiry.addItems([str(e) for e in Expiry])
        self.expiry.setCurrentText(str(form.expiry))
        self.minutes = QSpinBox(objectName="minutes")
        self.minutes.setRange(1, MAX_MINUTES)
        self.minutes.setValue(form.minutes)
        self.minutes.setSuffix(" minutes")
        self.comment = QLineEdit(form.untrusted_comment, objectName="comment")
        self.follow = QCheckBox("follow netvm changes", objectName="follow")
        self.follow.setChecked(form.follow)
        self.errors = {
            name: _error_label(name)
            for name in (OUTSIDE_PORTS, QUBE_PORTS, SOURCES, MINUTES, COMMENT, GENERAL)
        }
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._lay_out()
        for line_edit in (self.outside_ports, self.qube_ports, self.sources, self.comment):
            line_edit.setMinimumWidth(FIELD_WIDTH)
            line_edit.textChanged.connect(self.recheck)
        for combo in (self.forwardtype, self.proto, self.expiry):
            combo.currentTextChanged.connect(self.recheck)
        self.minutes.valueChanged.connect(self.recheck)
        self.follow.toggled.connect(self.recheck)
        self.check = self.recheck()

    def _lay_out(self) -> None:
        layout = QFormLayout()
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        def row(label: str, widget: QWidget, error: str | None = None) -> None:
            if error is None:
                layout.addRow(label, widget)
                return
            box = QVBoxLayout()
            box.setSpacing(2)
            box.addWidget(widget)
            box.addWidget(self.errors[error])
            layout.addRow(label, box)

        row("Type:", self.forwardtype)
        row("Protocol:", self.proto)
        row("Outside port(s):", self.outside_ports, OUTSIDE_PORTS)
        row("Qube port(s):", self.qube_ports, QUBE_PORTS)
        row("Allowed sources:", self.sources, SOURCES)
        expiry = QHBoxLayout()
        expiry.addWidget(self.expiry)
        expiry.addWidget(self.minutes)
        expiry_box = QWidget()
        expiry_box.setLayout(expiry)
        expiry.setContentsMargins(0, 0, 0, 0)
        row("Expires:", expiry_box, MINUTES)
        row("Comment:", self.comment, COMMENT)
        row("", self.follow)
        outer = QVBoxLayout(self)
        outer.addLayout(layout)
        outer.addWidget(self.errors[GENERAL])
        outer.addWidget(self.buttons)

    def form(self) -> ForwardForm:
        return ForwardForm(
            forwardtype=ForwardType(self.forwardtype.currentText()),
            proto=self.proto.currentText(),
            untrusted_outside_ports=self.outside_ports.text(),
            untrusted_qube_ports=self.qube_ports.text(),
            untrusted_sources=self.sources.text(),
            expiry=Expiry(self.expiry.currentText()),
            minutes=self.minutes.value(),
            untrusted_comment=self.comment.text(),
            follow=self.follow.isChecked(),
            via=self.via,
        )

    def recheck(self) -> FormCheck:
        """Check the whole form again; show each field's message, enable OK when valid."""
        self.sources.setPlaceholderText(SOURCE_HINT[ForwardType(self.forwardtype.currentText())])
        self.minutes.setEnabled(self.expiry.currentText() == Expiry.FOR_MINUTES)
        self.check = check_form(self.form(), time.time())
        for name, label in self.errors.items():
            message = self.check.errors.get(name)
            label.setText(message or "")
            label.setVisible(message is not None)
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(self.check.line is not None)
        # Grow (or shrink back) to fit the messages shown now.
        self.layout().activate()
        self.resize(self.width(), self.sizeHint().height())
        return self.check

    def line(self, now: float) -> str | None:
        """The rule line as of `now` (a "for N minutes" expiry counts from the moment of OK)."""
        return check_form(self.form(), now).line
