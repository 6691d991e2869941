"""The client library on its own: reply parsing, a missing service, status JSON (no root)."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.client import AdminClient, ProtocolViolation, QubesdError, ServiceNotRunning
from qubes_portfwd.client.connection import default_socket_path, parse_reply
from qubes_portfwd.model import forward_status
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.forward_status import ForwardState, ForwardStatus, HopState, HopStatus


def test_service_not_running_is_a_connection_error(tmp_path: Path) -> None:
    client = AdminClient(tmp_path / "nothing.sock")
    with pytest.raises(ServiceNotRunning, match="not running") as caught:
        client.list_qubes()
    assert isinstance(caught.value, ConnectionError)


def test_default_socket_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUBESD_SOCKET", "/tmp/elsewhere.sock")
    assert AdminClient().socket_path == Path("/tmp/elsewhere.sock")
    monkeypatch.delenv("QUBESD_SOCKET")
    assert default_socket_path() == Path("/run/qubes-portfwd/qubesd.sock")


@pytest.mark.parametrize("reply", [b"", b"1\0", b"2\0only-type", b"OK"])
def test_malformed_replies(reply: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_reply(reply)


def test_error_reply_as_qubesd_sends_it() -> None:
    with pytest.raises(QubesdError) as caught:
        parse_reply(b"2\0QubesVMNotFoundError\0\0No such domain: 'x'\0")
    assert caught.value.exc_type == "QubesVMNotFoundError"
    assert caught.value.message == "No such domain: 'x'"


hops = st.builds(
    HopStatus,
    qube=st.sampled_from(["sys-net", "sys-firewall", "work"]),
    role=st.sampled_from(forward_status.HOP_ROLES),
    state=st.sampled_from(list(HopState)),
    error=st.none() | st.text(max_size=50),
)
statuses = st.builds(
    ForwardStatus,
    id=st.text(alphabet="0123456789abcdef", min_size=12, max_size=12),
    target=st.sampled_from(["work", "personal"]),
    rule=st.text(max_size=80),
    family=st.sampled_from([4, 6]),
    state=st.sampled_from(list(ForwardState)),
    reason=st.none() | st.text(max_size=50),
    hops=st.lists(hops, max_size=4).map(tuple),
)


@given(st.lists(statuses, max_size=4))
def test_status_json_round_trip(values: list[ForwardStatus]) -> None:
    assert forward_status.loads(forward_status.dumps(values)) == values


GOOD = {
    "id": "0123456789ab",
    "target": "work",
    "rule": "action=forward",
    "family": 4,
    "state": "active",
    "reason": None,
    "hops": [{"qube": "work", "role": "target", "state": "applied", "error": None}],
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "xyz"}, "id"),
        ({"family": 5}, "family"),
        ({"family": True}, "family"),
        ({"state": "broken"}, "state"),
        ({"target": "../x"}, "target"),
        ({"hops": [{"qube": "work", "role": "boss", "state": "applied"}]}, "hops.role"),
        ({"hops": [{"qube": "work", "role": "target", "state": "meh"}]}, "hops.state"),
        ({"hops": "none"}, "hops"),
        ({"reason": 7}, "reason"),
    ],
)
def test_malformed_status_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        forward_status.loads(json.dumps([{**GOOD, **change}]).encode())
    assert caught.value.field == field


def test_status_payload_must_be_a_list() -> None:
    with pytest.raises(ValidationError, match="payload"):
        forward_status.loads(b'{"id": 1}')
    with pytest.raises(ValidationError, match="payload"):
        forward_status.loads(b"\xff")
