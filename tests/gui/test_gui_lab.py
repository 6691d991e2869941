"""The windows against a running lab: real admin service, real agents, real packets.

One lab for the module. The last test breaks sys-firewall's base rules on purpose.
Each window's screenshot is taken; with `GUI_SCREENSHOTS=docs/screenshots` (what
`make screenshots` sets) it is saved there, otherwise in a temporary directory, so a test run
leaves the committed pictures alone.
"""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QMessageBox, QWidget
from pytestqt.qtbot import QtBot

from lifecycle_lab import LabUser
from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient, ForwardState, HopState
from qubes_portfwd.gui.forward_form import OUTSIDE_PORTS, SOURCES
from qubes_portfwd.gui.overview_window import OverviewWindow
from qubes_portfwd.gui.path_widget import path_steps
from qubes_portfwd.gui.prompt_window import PromptWindow
from qubes_portfwd.gui.settings_window import SettingsWindow

pytestmark = pytest.mark.lab

SCREENSHOTS = Path(
    os.environ.get("GUI_SCREENSHOTS") or Path(tempfile.gettempdir()) / "qpf-gui-screenshots"
)
REFRESH_MS = 300
WAIT_MS = 30_000
WEB_PORT = 8080
MARKER = "hello-from-work-via-the-gui"


@pytest.fixture(scope="module")
def user(private_lab: Lab) -> LabUser:
    private_lab.natd_url("sys-firewall")  # natd answers NAT-PMP there before the prompt tests ask
    return LabUser(private_lab)


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    (root / "marker.txt").write_text(MARKER)
    return root


@pytest.fixture(scope="module")
def web_server(user: LabUser, web_root: Path) -> Iterator[None]:
    """An HTTP server in `work` serving the marker file."""
    server = user.lab.popen(
        "work", [sys.executable, "-m", "http.server", str(WEB_PORT)], cwd=web_root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(lambda: curl(user, "work", f"127.0.0.1:{WEB_PORT}") == MARKER, "server in work")
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def client_of(user: LabUser) -> AdminClient:
    return AdminClient(user.lab.admin_socket, timeout=30)


def curl(user: LabUser, host: str, address: str) -> str | None:
    done = user.lab.run(
        host, ["curl", "-s", "--max-time", "2", f"http://{address}/marker.txt"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else None


def _wait(condition: object, what: str, timeout: float = WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def screenshot(widget: QWidget, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert widget.grab().save(str(SCREENSHOTS / f"{name}.png"))


def _ok_button(dialog: QWidget):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)  # type: ignore[attr-defined]


def _shown(window: SettingsWindow, forward_id: str) -> bool:
    return any(row.id == forward_id for row in window.forwards.rows)


def test_a_forward_added_in_the_dialog_exists_and_carries_traffic(
    qtbot: QtBot, user: LabUser, web_server: None
) -> None:
    window = SettingsWindow(client_of(user), "work", refresh_ms=REFRESH_MS)
    qtbot.addWidget(window)
    window.show()
    dialog = window.open_add_dialog()
    qtbot.keyClicks(dialog.outside_ports, "80")
    qtbot.keyClicks(dialog.qube_ports, str(WEB_PORT))
    qtbot.keyClicks(dialog.comment, "web server")
    qtbot.mouseClick(_ok_button(dialog), Qt.MouseButton.LeftButton)

    qtbot.waitUntil(lambda: bool(user.forwards()), timeout=WAIT_MS)  # `qvm-portfwd list --json`
    [(forward_id, listed)] = user.forwards().items()
    assert listed["outside_ports"] == "80" and listed["qube_ports"] == str(WEB_PORT)
    assert listed["comment"] == "web server"
    assert forward_id in user.ok("qvm_portfwd", "list")

    edge = f"{user.lab.addresses.edge_lan4}:80"
    _wait(lambda: curl(user, "lan", edge) == MARKER, "LAN reaches work through the forward")
    qtbot.waitUntil(lambda: _shown(window, forward_id), timeout=WAIT_MS)
    # A refresh taken while the hops were still being published shows the forward active with
    # hops pending ("…"); wait for the one after it.
    applied_path = "sys-net ✔ → sys-firewall ✔ → work ✔"
    qtbot.waitUntil(
        lambda: (
            window.forwards.rows[0].state == ForwardState.ACTIVE
            and window.forwards.cell_texts()[0][-1] == applied_path
        ),
        timeout=WAIT_MS,
    )


def test_invalid_input_shows_the_message_and_creates_nothing(qtbot: QtBot, user: LabUser) -> None:
    before = set(user.forwards())
    window = SettingsWindow(client_of(user), "work", refresh_ms=REFRESH_MS)
    qtbot.addWidget(window)
    window.show()
    dialog = window.open_add_dialog()
    qtbot.keyClicks(dialog.outside_ports, "99999")
    dialog.sources.setText("personal")
    assert dialog.errors[OUTSIDE_PORTS].text() == (
        "port 99999 is out of range; expected 1-65535 (a port 1-65535 or a range N-M with N <= M)"
    )
    assert dialog.errors[SOURCES].text().startswith("'personal' is a qube name")
    assert not _ok_button(dialog).isEnabled()
    qtbot.mouseClick(_ok_button(dialog), Qt.MouseButton.LeftButton)  # a disabled OK does nothing
    assert dialog.isVisible()
    screenshot(dialog, "forward-dialog-error")
    dialog.reject()
    assert set(user.forwards()) == before


def test_a_forward_added_from_the_cli_appears_after_refresh(qtbot: QtBot, user: LabUser) -> None:
    window = SettingsWindow(client_of(user), "work", refresh_ms=REFRESH_MS)
    qtbot.addWidget(window)
    window.resize(1180, 720)
    window.show()
    added = user.add(
        "work", "udp", "5000-5001:6000-6001", "--external", "--from", "192.0.2.0/24",
        "--for", "2h", "--comment", "game",
    )  # fmt: skip
    internal = user.add("work", "tcp", "2222:22", "--internal", "--from", "personal")
    qtbot.waitUntil(lambda: _shown(window, added) and _shown(window, internal), timeout=WAIT_MS)
    row = next(r for r in window.forwards.rows if r.id == added)
    assert row.cells[:6] == ("external", "IPv4", "udp", "5000-5001", "6000-6001", "192.0.2.0/24")
    assert row.cells[6].startswith("in 1h59m") or row.cells[6] == "in 2h00m"

    def settled() -> bool:
        return all(r.state == ForwardState.ACTIVE for r in window.forwards.rows)

    qtbot.waitUntil(settled, timeout=WAIT_MS)
    screenshot(window, "settings-work")


def test_a_network_qube_shows_the_ports_forwarded_through_it(qtbot: QtBot, user: LabUser) -> None:
    window = SettingsWindow(client_of(user), "sys-firewall", refresh_ms=REFRESH_MS)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.through_box.isVisible(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(window.through.rows) >= 3, timeout=WAIT_MS)
    through = {row.cells[0] for row in window.through.rows}
    assert through == {"work"}
    assert window.forwards.rows == []  # none ends in sys-firewall itself
    screenshot(window, "settings-sys-firewall")


def _select(window: SettingsWindow, forward_id: str) -> None:
    number = next(i for i, row in enumerate(window.forwards.rows) if row.id == forward_id)
    window.forwards.selectRow(number)


def test_edit_and_remove_change_the_rules_the_cli_lists(qtbot: QtBot, user: LabUser) -> None:
    window = SettingsWindow(client_of(user), "work", refresh_ms=REFRESH_MS)
    qtbot.addWidget(window)
    window.show()
    listed = user.forwards()
    [game] = [i for i, f in listed.items() if f["comment"] == "game"]
    [internal] = {i for i, f in listed.items() if f["type"] == "internal"}
    qtbot.waitUntil(lambda: _shown(window, game) and _shown(window, internal), timeout=WAIT_MS)

    _select(window, game)
    dialog = window.open_edit_dialog()
    assert dialog is not None and dialog.outside_ports.text() == "5000-5001"
    dialog.comment.setText("game server")
    qtbot.mouseClick(_ok_button(dialog), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: user.forwards()[game]["comment"] == "game server", timeout=WAIT_MS)
    assert user.forwards()[game]["expire"] is not None  # the expiry survived the edit

    _select(window, internal)
    box = window.confirm_remove()
    assert box is not None
    box.button(QMessageBox.StandardButton.Yes).click()
    qtbot.waitUntil(lambda: internal not in user.forwards(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not _shown(window, internal), timeout=WAIT_MS)


def test_allow_always_sets_the_policy_then_grants(qtbot: QtBot, user: LabUser) -> None:
    gateway = str(user.lab.topology["sys-firewall"].address4)
    asking = user.lab.popen(
        "work",
        ["timeout", "60", "natpmpc", "-g", gateway, "-a", "18086", "8086", "udp", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    try:
        window = PromptWindow(client_of(user), poll_ms=REFRESH_MS)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitUntil(lambda: bool(window.cards), timeout=WAIT_MS)
        qtbot.mouseClick(window.cards[0].allow_always, Qt.MouseButton.LeftButton)
        out, err = asking.communicate(timeout=30)
    finally:
        if asking.poll() is None:
            asking.kill()
            asking.wait(timeout=5)
    assert "Mapped public port 18086 protocol UDP to local port 8086" in out, err
    assert client_of(user).nat_policy_get("work")[0].startswith("ports=18086 action=allow")


def test_the_prompt_allow_grants_a_pending_natpmp_request(qtbot: QtBot, user: LabUser) -> None:
    gateway = str(user.lab.topology["sys-firewall"].address4)
    # The default policy asks: natpmpc waits while dom0's prompt shows the request.
    asking = user.lab.popen(
        "work",
        ["timeout", "60", "natpmpc", "-g", gateway, "-a", "18085", "8085", "tcp", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    try:
        window = PromptWindow(client_of(user), poll_ms=REFRESH_MS)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitUntil(lambda: bool(window.cards), timeout=WAIT_MS)
        [card] = window.cards
        assert card.ask.qube == "work" and card.ask.port == 18085 and card.ask.proto == "tcp"
        assert asking.poll() is None  # still waiting for the user
        screenshot(window, "prompt")
        qtbot.mouseClick(card.allow_once, Qt.MouseButton.LeftButton)
        out, err = asking.communicate(timeout=30)
    finally:
        if asking.poll() is None:
            asking.kill()
            asking.wait(timeout=5)
    assert "Mapped public port 18085 protocol TCP to local port 8085" in out, err
    qtbot.waitUntil(lambda: not window.cards, timeout=WAIT_MS)
    assert "Allowed once" in window.status.text()
    comments = [f.get("comment") for f in user.forwards().values()]
    assert "NAT-PMP" in comments


def test_the_overview_shows_a_failed_hop_as_failed(qtbot: QtBot, user: LabUser) -> None:
    """Last in the module: it breaks sys-firewall's base rules on purpose."""
    client = client_of(user)
    stale = client.add_forward(
        "personal",
        "action=forward forwardtype=external proto=tcp srcports=8443 dstports=443 "
        "srchost=0.0.0.0/0",
    )
    client.set_property("personal", "netvm", "sys-net")  # the path it was made for is gone
    window = OverviewWindow(client, refresh_ms=REFRESH_MS)
    qtbot.addWidget(window)
    window.resize(1000, 720)
    window.show()
    qtbot.waitUntil(lambda: window.card(stale) is not None, timeout=WAIT_MS)
    card = window.card(stale)
    assert card is not None and card.status.state == ForwardState.INACTIVE
    assert card.rebind is not None
    screenshot(window, "overview")
    qtbot.mouseClick(card.rebind, Qt.MouseButton.LeftButton)

    def rebound() -> bool:
        now = window.card(stale)
        return now is not None and now.status.state == ForwardState.ACTIVE

    qtbot.waitUntil(rebound, timeout=WAIT_MS)

    user.lab.run("sys-firewall", ["nft", "delete", "table", "ip", "qubes"], check=True)
    broken = user.add("work", "tcp", "8082:8082", "--external", "--from", "any")

    def failed() -> bool:
        now = window.card(broken)
        return now is not None and now.status.state == ForwardState.FAILED

    qtbot.waitUntil(failed, timeout=WAIT_MS)
    card = window.card(broken)
    assert card is not None
    states = {step.label.split(" ·")[0]: step.state for step in path_steps(card.status)}
    assert states["sys-firewall"] == HopState.FAILED
    assert states["sys-net"] != HopState.APPLIED
    assert card.findChild(QWidget, "state").text() == "failed"  # type: ignore[union-attr]
    screenshot(window, "overview-failed-hop")
