"""Every CLI failure is one `PROG: error: …` line on stderr and an exit code, no traceback."""

from pathlib import Path

import pytest

from qubes_lab.tools import qvm_firewall, qvm_prefs
from qubes_portfwd.cli import qvm_portfwd


@pytest.fixture(autouse=True)
def no_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUBESD_SOCKET", str(tmp_path / "nobody-listens.sock"))


def one_error_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{prog}: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["add", "work", "icmp", "80", "--external", "--from", "any"], "PROTO"),
        (["add", "work", "tcp", "80:0", "--external", "--from", "any"], "QUBE_PORT"),
        (["add", "work", "tcp", "80", "--external", "--from", "work"], "--from"),
        (["add", "work", "tcp", "80", "--internal", "--from", "any"], "--from"),
        (["add", "work", "tcp", "80", "--external", "--from", "any", "--for", "soon"], "--for"),
        (["add", "work", "tcp", "80", "--from", "any"], "--external"),
        (["add", "work", "tcp", "80", "--external"], "--from"),
        (
            [
                "add",
                "work",
                "tcp",
                "80",
                "--external",
                "--from",
                "any",
                "--for",
                "1h",
                "--until-reboot",
            ],
            "--until-reboot",
        ),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_portfwd_usage_errors_exit_2_before_any_call(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert qvm_portfwd.main(argv) == 2
    assert needle in one_error_line(capsys, "qvm-portfwd")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["work", "add", "allow"], "action"),
        (["work", "add", "accept", "dsthost=a b"], "dsthost"),
        (["work", "add", "forward", "external", "tcp", "80"], "srchost"),
        (["work", "add"], "RULE"),
        (["work", "add", "accept", "--before", "x"], "--before"),
    ],
)
def test_firewall_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert qvm_firewall.main(argv) == 2
    assert needle in one_error_line(capsys, "qvm-firewall")


@pytest.mark.parametrize(
    ("main", "prog", "argv"),
    [
        (qvm_portfwd.main, "qvm-portfwd", ["list"]),
        (
            qvm_portfwd.main,
            "qvm-portfwd",
            ["add", "work", "tcp", "80", "--external", "--from", "any"],
        ),
        (qvm_portfwd.main, "qvm-portfwd", ["del", "0123456789ab"]),
        (qvm_firewall.main, "qvm-firewall", ["work"]),
        (qvm_firewall.main, "qvm-firewall", ["work", "add", "accept"]),
        (qvm_prefs.main, "qvm-prefs", ["work"]),
        (qvm_prefs.main, "qvm-prefs", ["work", "netvm", "none"]),
    ],
)
def test_no_service_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], main, prog: str, argv: list[str]
) -> None:
    assert main(argv) == 1
    assert "admin service" in one_error_line(capsys, prog)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert qvm_portfwd.main(["--help"]) == 0
    assert "--external" not in capsys.readouterr().err
