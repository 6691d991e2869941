"""The Firewall tab's outbound half against a running lab: each action as `qvm-firewall` lists it.

Every result is read back with Qubes' own qvm-firewall (pinned core-admin-client) against the
lab's qubesd socket. One lab for the module; each test starts from `work` allowing all.
"""

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QWidget
from pytestqt.qtbot import QtBot

from lifecycle_lab import LabUser
from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient
from qubes_portfwd.gui.outbound_conf import full_access_minutes
from qubes_portfwd.gui.outbound_dialog import OutboundDialog
from qubes_portfwd.gui.outbound_form import ADDRESS, PORTS
from qubes_portfwd.gui.settings_window import SettingsWindow

pytestmark = pytest.mark.lab

SCREENSHOTS = Path(
    os.environ.get("GUI_SCREENSHOTS") or Path(tempfile.gettempdir()) / "qpf-gui-screenshots"
)
REFRESH_MS = 300
WAIT_MS = 30_000
QUBE = "work"
DNS = "action=accept specialtarget=dns"
ICMP = "action=accept proto=icmp"
LIMITED = [DNS, ICMP, "action=drop"]
WEB = "action=accept dsthost=www.example.com proto=tcp dstports=443-443"
WEB_LISTED = (
    "action=accept proto=tcp dsthost=www.example.com dstports=443-443"  # qvm-firewall's order
)


@pytest.fixture(scope="module")
def user(private_lab: Lab) -> LabUser:
    return LabUser(private_lab)


@pytest.fixture
def client(user: LabUser) -> Iterator[AdminClient]:
    admin = AdminClient(user.lab.admin_socket, timeout=30)
    admin.firewall_set(QUBE, ["action=accept"])
    yield admin
    admin.firewall_set(QUBE, ["action=accept"])


@pytest.fixture
def listed(user: LabUser, stock_tool):
    """`qvm-firewall --raw work list`: the stored rules as Qubes' own tool prints them."""

    def run() -> list[str]:
        done = stock_tool("qvm-firewall", ["--raw", QUBE, "list"], user.lab.admin_socket)
        assert done.returncode == 0, done.stderr
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    return run


def screenshot(widget: QWidget, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert widget.grab().save(str(SCREENSHOTS / f"{name}.png"))


def _window(qtbot: QtBot, client: AdminClient) -> SettingsWindow:
    window = SettingsWindow(client, QUBE, refresh_ms=REFRESH_MS)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.outbound.read_lines is not None, timeout=WAIT_MS)
    return window


def _apply(qtbot: QtBot, window: SettingsWindow) -> None:
    panel = window.outbound
    assert panel.apply_button.isEnabled()
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.saving, timeout=WAIT_MS)
    assert panel.notice.isHidden(), panel.notice.text()
    assert panel.state.text() == "Outbound rules saved."
    assert not panel.apply_button.isEnabled()  # nothing left unsaved


def _ok(dialog: QWidget):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)  # type: ignore[attr-defined]


def _fill(qtbot: QtBot, dialog: OutboundDialog, address: str, proto: str, ports: str) -> None:
    dialog.address.clear()
    qtbot.keyClicks(dialog.address, address)
    dialog.proto.setCurrentText("tcp")  # the ports field takes input with tcp or udp
    dialog.ports.clear()
    qtbot.keyClicks(dialog.ports, ports)
    dialog.proto.setCurrentText(proto)


def _rows(window: SettingsWindow) -> list[list[str]]:
    table = window.outbound.table
    return [
        [table.item(row, column).text() for column in range(table.columnCount())]
        for row in range(table.rowCount())
    ]


def test_limit_and_allow_all_again(qtbot: QtBot, client: AdminClient, listed) -> None:
    window = _window(qtbot, client)
    panel = window.outbound
    assert panel.allow_all.isChecked() and not panel.add_button.isEnabled()
    panel.limit.click()
    assert panel.add_button.isEnabled() and panel.allow_dns.isChecked()
    assert "unsaved changes" in panel.title()
    _apply(qtbot, window)
    assert listed() == LIMITED

    panel.allow_all.click()
    assert not panel.add_button.isEnabled() and not panel.allow_icmp.isEnabled()
    _apply(qtbot, window)
    assert listed() == ["action=accept"]


def test_add_edit_and_remove_a_rule(qtbot: QtBot, client: AdminClient, listed) -> None:
    client.firewall_set(QUBE, LIMITED)
    window = _window(qtbot, client)
    panel = window.outbound
    qtbot.waitUntil(lambda: panel.limit.isChecked(), timeout=WAIT_MS)

    dialog = panel.open_add_dialog()
    _fill(qtbot, dialog, "WWW.example", "any", "443")
    assert dialog.errors[ADDRESS].text().startswith("'WWW.example' is not an address")
    assert (
        dialog.errors[ADDRESS]
        .text()
        .endswith(
            "expected an IPv4/IPv6 address, a network A/N, a lowercase host name, or * for any"
        )
    )
    assert dialog.errors[PORTS].text().startswith("ports need the protocol tcp or udp")
    assert not _ok(dialog).isEnabled()
    screenshot(dialog, "outbound-dialog-error")
    _fill(qtbot, dialog, "www.example.com", "tcp", "443")
    assert _ok(dialog).isEnabled()
    qtbot.mouseClick(_ok(dialog), Qt.MouseButton.LeftButton)
    assert _rows(window) == [["www.example.com", "tcp", "443", ""]]
    assert listed() == LIMITED  # nothing stored before Apply
    _apply(qtbot, window)
    assert listed() == [WEB_LISTED, *LIMITED]

    panel.table.selectRow(0)
    dialog = panel.open_edit_dialog()
    assert dialog is not None and dialog.address.text() == "www.example.com"
    _fill(qtbot, dialog, "192.168.0.0/16", "udp", "1024-1234")
    qtbot.keyClicks(dialog.comment, "lan")
    qtbot.mouseClick(_ok(dialog), Qt.MouseButton.LeftButton)
    _apply(qtbot, window)
    edited = "action=accept proto=udp dst4=192.168.0.0/16 dstports=1024-1234 comment=lan"
    assert listed() == [edited, *LIMITED]

    panel.table.selectRow(0)
    qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
    assert _rows(window) == []
    _apply(qtbot, window)
    assert listed() == LIMITED


def test_dns_and_icmp_toggles(qtbot: QtBot, client: AdminClient, listed) -> None:
    client.firewall_set(QUBE, [WEB, *LIMITED])
    window = _window(qtbot, client)
    panel = window.outbound
    qtbot.waitUntil(lambda: panel.allow_dns.isChecked(), timeout=WAIT_MS)
    panel.allow_dns.click()
    _apply(qtbot, window)
    assert listed() == [WEB_LISTED, ICMP, "action=drop"]

    panel.allow_icmp.click()
    panel.allow_dns.click()
    _apply(qtbot, window)
    assert listed() == [WEB_LISTED, DNS, "action=drop"]

    reopened = _window(qtbot, client)
    assert reopened.outbound.allow_dns.isChecked()
    assert not reopened.outbound.allow_icmp.isChecked()


def test_temporary_full_access(qtbot: QtBot, client: AdminClient, listed) -> None:
    client.firewall_set(QUBE, LIMITED)
    window = _window(qtbot, client)
    panel = window.outbound
    qtbot.waitUntil(lambda: panel.full_access.isEnabled(), timeout=WAIT_MS)
    assert not panel.minutes.isEnabled()
    panel.full_access.click()
    panel.minutes.setValue(10)
    before = int(time.time())
    _apply(qtbot, window)
    after = int(time.time())
    [full, *rest] = listed()
    assert rest == LIMITED
    assert full.startswith("action=accept expire=")
    until = int(full.split("=")[-1])
    assert before + 600 <= until <= after + 600

    opened = time.time()
    reopened = _window(qtbot, client)
    shown = time.time()
    assert reopened.outbound.full_access.isChecked()
    # The minutes left when the window read the list, whenever that was between the two.
    left = reopened.outbound.minutes.value()
    assert full_access_minutes(until, shown) <= left <= full_access_minutes(until, opened)
    assert not reopened.outbound.apply_button.isEnabled()  # shown as stored, not changed

    reopened.outbound.full_access.click()
    _apply(qtbot, reopened)
    assert listed() == LIMITED


def test_rules_made_outside_are_shown_read_only_with_the_reason(
    qtbot: QtBot, user: LabUser, client: AdminClient, stock_tool, listed
) -> None:
    client.firewall_set(QUBE, [WEB, *LIMITED])
    added = stock_tool(
        "qvm-firewall", [QUBE, "add", "--before", "0", "drop", "dsthost=10.9.9.9"],
        user.lab.admin_socket,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    stored = listed()
    window = _window(qtbot, client)
    panel = window.outbound
    assert panel.read_only.isVisible() and not panel.table.isVisible()
    assert "read-only here" in panel.notice.text() and "1 rule(s) block" in panel.notice.text()
    table = panel.read_only
    cells = [
        [table.item(row, column).text() for column in range(table.columnCount())]
        for row in range(table.rowCount())
    ]
    assert len(cells) == len(stored) == 5
    assert cells[0][:2] == ["drop", "10.9.9.9/32"]
    assert cells[0][-1].startswith("a drop rule before the end")
    assert [row[-1] for row in cells[1:]] == [""] * 4
    for control in (panel.allow_all, panel.limit, panel.add_button, panel.apply_button):
        assert not control.isEnabled()
    assert panel.open_edit_dialog() is None
    screenshot(window, "settings-firewall-read-only")
    assert listed() == stored


def test_a_concurrent_change_is_shown_not_lost(
    qtbot: QtBot, user: LabUser, client: AdminClient, stock_tool, listed
) -> None:
    client.firewall_set(QUBE, LIMITED)
    window = _window(qtbot, client)
    panel = window.outbound
    qtbot.waitUntil(lambda: panel.limit.isChecked(), timeout=WAIT_MS)
    dialog = panel.open_add_dialog()
    _fill(qtbot, dialog, "www.example.com", "tcp", "443")
    qtbot.mouseClick(_ok(dialog), Qt.MouseButton.LeftButton)

    # Another client changes the list between the window's read and its save.
    other = stock_tool(
        "qvm-firewall", [QUBE, "add", "--before", "0", "accept", "dsthost=other.example.org"],
        user.lab.admin_socket,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    theirs = listed()
    assert theirs[0] == "action=accept dsthost=other.example.org"

    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.state.text() == "Outbound rules not saved.", timeout=WAIT_MS)
    assert "changed elsewhere since this window read them" in panel.notice.text()
    assert listed() == theirs  # their change kept, ours not written over it

    qtbot.mouseClick(panel.discard_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: [row[0] for row in _rows(window)] == ["other.example.org"], timeout=WAIT_MS
    )
    assert panel.notice.isHidden() and not panel.apply_button.isEnabled()


def test_the_whole_tab_shows_both_halves(qtbot: QtBot, user: LabUser, client: AdminClient) -> None:
    client.firewall_set(
        QUBE,
        [WEB, "action=accept dst4=192.168.1.0/24 comment=printer and NAS", *LIMITED],
    )
    forward = user.add(QUBE, "tcp", "8443:443", "--external", "--from", "any", "--comment", "web")
    try:
        window = _window(qtbot, client)
        window.resize(1180, 860)
        qtbot.waitUntil(lambda: len(_rows(window)) == 2, timeout=WAIT_MS)
        qtbot.waitUntil(
            lambda: any(row.id == forward for row in window.forwards.rows), timeout=WAIT_MS
        )
        qtbot.waitUntil(
            lambda: window.forwards.cell_texts()[0][-1].count("✔") == 3, timeout=WAIT_MS
        )
        screenshot(window, "settings-firewall-tab")
    finally:
        client.remove_forward(QUBE, forward)
