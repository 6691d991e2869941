"""Dom0's prompt socket (the extension's, on a stock host): qubesd's framing, dom0 only,
the three prompt methods only, each with its argument's form; nothing else reaches a handler."""

import asyncio
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_service import RunningService, make_service
from qubes_portfwd.client.connection import QubesdError, frame_request, parse_reply
from qubes_portfwd.dom0.prompt_socket import serve_prompt_requests


@pytest.fixture
def prompt(tmp_path: Path) -> Iterator[Path]:
    running: RunningService = make_service(tmp_path, agent_timeout=0.05)
    running.start()
    try:
        runner = running._runner
        assert runner is not None
        path = tmp_path / "prompt.sock"
        serving = serve_prompt_requests(runner.service, path, group=None, read_timeout=2.0)  # type: ignore[arg-type]
        asyncio.run_coroutine_threadsafe(serving, runner.loop).result(timeout=10)
        yield path
    finally:
        running.stop()


def ask(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return parse_reply(reply)


def refused(path: Path, data: bytes) -> str:
    with pytest.raises(QubesdError) as err:
        ask(path, data)
    return str(err.value)


def test_dom0_lists_what_waits(prompt: Path) -> None:
    assert stat.S_IMODE(prompt.stat().st_mode) == 0o660
    assert ask(prompt, frame_request("dom0", "admin.portfwd.Pending")) == b""


def test_a_qube_as_the_caller_is_refused(prompt: Path) -> None:
    message = refused(prompt, frame_request("dom0", "admin.portfwd.Pending", source="work"))
    assert "source: expected dom0" in message


def test_any_other_method_is_refused(prompt: Path) -> None:
    message = refused(prompt, frame_request("dom0", "admin.vm.feature.Set", "portfwd.x"))
    assert "method: expected one of admin.portfwd.Approve" in message


def test_each_method_takes_its_argument_form(prompt: Path) -> None:
    assert "takes a request id" in refused(prompt, frame_request("dom0", "admin.portfwd.Deny"))
    assert "takes no argument" in refused(
        prompt, frame_request("dom0", "admin.portfwd.Pending", "x")
    )
    assert "ID: no pending request" in refused(
        prompt, frame_request("dom0", "admin.portfwd.Approve", "0123")
    )
