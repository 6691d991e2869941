"""The windows and commands without a service: they say so instead of failing."""

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from qubes_portfwd.client import AdminClient
from qubes_portfwd.gui import overview_main, prompt_main, settings_main
from qubes_portfwd.gui.overview_window import OverviewWindow
from qubes_portfwd.gui.prompt_window import PromptWindow
from qubes_portfwd.gui.settings_window import SettingsWindow

WAIT_MS = 5000


@pytest.fixture
def nowhere(tmp_path: Path) -> AdminClient:
    return AdminClient(tmp_path / "no-service.sock", timeout=2)


def test_each_window_reports_a_missing_service(qtbot: QtBot, nowhere: AdminClient) -> None:
    settings = SettingsWindow(nowhere, "work")
    overview = OverviewWindow(nowhere)
    prompt = PromptWindow(nowhere)
    for window in (settings, overview, prompt):
        qtbot.addWidget(window)
    for label in (settings.status, overview.status, prompt.status):
        qtbot.waitUntil(lambda label=label: "not running" in label.text(), timeout=WAIT_MS)
    assert settings.status.text().startswith("Could not load work's rules: the admin service")


@pytest.mark.parametrize("module", [settings_main, overview_main, prompt_main])
def test_each_command_has_help(module: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])  # type: ignore[attr-defined]
    assert done.value.code == 0
    assert "--socket" in capsys.readouterr().out


def test_the_settings_command_needs_a_qube(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        settings_main.main([])
    assert done.value.code == 2
    assert "--qube" in capsys.readouterr().err
