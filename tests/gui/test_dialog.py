"""The dialog checks as the user types: the message appears next to the field, OK follows."""

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox
from pytestqt.qtbot import QtBot

from qubes_portfwd.gui.forward_dialog import ForwardDialog
from qubes_portfwd.gui.forward_form import OUTSIDE_PORTS, SOURCES, Expiry


def _ok(dialog: ForwardDialog):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)


def test_typing_shows_and_clears_the_message(qtbot: QtBot) -> None:
    dialog = ForwardDialog("work")
    qtbot.addWidget(dialog)
    dialog.show()
    assert not _ok(dialog).isEnabled()  # no port yet
    qtbot.keyClicks(dialog.outside_ports, "70000")
    label = dialog.errors[OUTSIDE_PORTS]
    assert label.isVisible()
    assert label.text() == "port 70000 is out of range; expected 1-65535 " + (
        "(a port 1-65535 or a range N-M with N <= M)"
    )
    assert not _ok(dialog).isEnabled()
    dialog.outside_ports.clear()
    qtbot.keyClicks(dialog.outside_ports, "8080")
    assert not label.isVisible()
    assert _ok(dialog).isEnabled()
    assert dialog.line(0) == "action=forward forwardtype=external proto=tcp srcports=8080 " + (
        "srchost=0.0.0.0/0"
    )


def test_switching_to_internal_makes_any_wrong(qtbot: QtBot) -> None:
    dialog = ForwardDialog("work")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.keyClicks(dialog.outside_ports, "22")
    dialog.forwardtype.setCurrentText("internal")
    assert "only for external" in dialog.errors[SOURCES].text()
    assert not _ok(dialog).isEnabled()
    dialog.sources.setText("personal")
    assert _ok(dialog).isEnabled()


def test_minutes_are_offered_only_for_a_timed_forward(qtbot: QtBot) -> None:
    dialog = ForwardDialog("work")
    qtbot.addWidget(dialog)
    assert not dialog.minutes.isEnabled()
    dialog.expiry.setCurrentText(str(Expiry.FOR_MINUTES))
    assert dialog.minutes.isEnabled()
    qtbot.keyClicks(dialog.outside_ports, "22")
    dialog.minutes.setValue(15)
    assert dialog.line(1000).endswith("expire=1900")
    qtbot.mouseClick(_ok(dialog), Qt.MouseButton.LeftButton)
    assert dialog.result() == ForwardDialog.DialogCode.Accepted
