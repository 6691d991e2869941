"""The outbound panel's own logic on lists handed to it (no service: nothing is saved here)."""

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from qubes_portfwd.client import AdminClient
from qubes_portfwd.gui.calls import Calls
from qubes_portfwd.gui.outbound_panel import OutboundPanel

LIMITED = ["action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop"]
WEB = "action=accept dsthost=www.example.com proto=tcp dstports=443-443"
NAS = "action=accept dst4=192.168.1.0/24"


@pytest.fixture
def panel(qtbot: QtBot, tmp_path: Path) -> OutboundPanel:
    calls = Calls(AdminClient(tmp_path / "no-service.sock", timeout=2))
    reads: list[int] = []
    made = OutboundPanel(calls, "work", lambda: reads.append(1))
    qtbot.addWidget(made)
    made.show_lines([WEB, *LIMITED], made.generation)
    return made


def test_unsaved_changes_keep_a_new_read_out_and_say_the_list_changed(
    panel: OutboundPanel,
) -> None:
    assert panel.limit.isChecked() and panel.discard_button.text() == "Reload"
    panel.allow_icmp.click()
    assert panel.has_changes() and panel.discard_button.text() == "Discard"
    assert panel.apply_button.isEnabled() and "unsaved changes" in panel.title()
    panel.show_lines([WEB, *LIMITED], panel.generation)  # the same list: nothing to say
    assert panel.notice.isHidden()
    panel.show_lines([NAS, WEB, *LIMITED], panel.generation)
    assert "changed elsewhere" in panel.notice.text()
    assert panel.read_lines == (WEB, *LIMITED) and not panel.allow_icmp.isChecked()


def test_a_read_from_before_a_save_is_ignored(panel: OutboundPanel) -> None:
    panel.show_lines(["action=accept"], panel.generation - 1)
    assert panel.limit.isChecked() and panel.read_lines == (WEB, *LIMITED)


def test_an_edit_whose_rule_was_read_away_changes_nothing(panel: OutboundPanel) -> None:
    panel.table.selectRow(0)
    dialog = panel.open_edit_dialog()
    assert dialog is not None
    panel.show_lines([NAS, *LIMITED], panel.generation)  # no changes pending: taken over
    dialog.ports.setText("8443")
    dialog.accept()
    assert "no longer listed" in panel.notice.text()
    assert [rule.dsthost.text for rule in panel.rules if rule.dsthost] == ["192.168.1.0/24"]
    assert not panel.has_changes()


def test_a_list_it_cannot_represent_blocks_every_control(panel: OutboundPanel) -> None:
    panel.show_lines(["action=drop dst4=10.0.0.1/32", WEB, *LIMITED], panel.generation)
    assert not panel.editable() and panel.read_only.rowCount() == 5
    assert not any(
        widget.isEnabled()
        for widget in (panel.allow_all, panel.limit, panel.add_button, panel.apply_button)
    )
    panel.show_lines([WEB, *LIMITED], panel.generation)  # fixed elsewhere: editable again
    assert panel.editable() and panel.add_button.isEnabled() and panel.read_only.isHidden()
