"""Raw bytes on the service's socket: framing, replies, limits and bad clients.

After each misbehaving client the service must still answer a normal request.
"""

import socket

import pytest

from admin_service import RunningService, exchange
from qubes_lab.qubesd.wire import MAX_HEADER, MAX_PAYLOAD


def still_serving(service: RunningService) -> None:
    reply = exchange(service.socket_path, b"admin.vm.List+ dom0 name dom0\0")
    assert reply.startswith(b"0\0dom0 class=AdminVM state=Running")


def error_fields(reply: bytes) -> list[bytes]:
    assert reply.startswith(b"2\0") and reply.endswith(b"\0")
    return reply[2:-1].split(b"\0")


def test_ok_reply_framing(service: RunningService) -> None:
    reply = exchange(service.socket_path, b"admin.vm.property.Get+netvm dom0 name work\0")
    assert reply == b"0\0default=True type=vm sys-firewall"


def test_empty_payload_set_clears_rules(service: RunningService) -> None:
    assert exchange(service.socket_path, b"admin.vm.firewall.Set+ dom0 name work\0") == b"0\0"
    assert exchange(service.socket_path, b"admin.vm.firewall.Get+ dom0 name work\0") == b"0\0"


@pytest.mark.parametrize(
    ("request_bytes", "exc_type", "words"),
    [
        (b"admin.vm.Frobnicate+ dom0 name dom0\0", b"ProtocolError", b"No such method"),
        (b"admin.vm.List+ dom0 name nosuch\0", b"QubesVMNotFoundError", b"nosuch"),
        (b"admin.vm.List+x dom0 name dom0\0", b"ProtocolError", b"unexpected argument"),
        (b"admin.vm.List+ dom0 name dom0\0payload", b"ProtocolError", b"unexpected payload"),
        (b"admin.vm.feature.Get+ dom0 name work\0", b"ProtocolError", b"expected an argument"),
        (b"admin.vm.List+ dom0 name\0", b"ProtocolError", b"header"),
        (b"admin.vm.List+ dom0 name dom0", b"ProtocolError", b"NUL"),
        ("admin.vm.List+ dom0 name d\u00f6m0\0".encode(), b"ProtocolError", b"ASCII"),
        (b"x" * (MAX_HEADER + 1), b"ProtocolError", b"header longer"),
    ],
)
def test_error_replies(
    service: RunningService, request_bytes: bytes, exc_type: bytes, words: bytes
) -> None:
    fields = error_fields(exchange(service.socket_path, request_bytes))
    assert fields[0] == exc_type
    assert words in fields[2]
    still_serving(service)


def test_non_ascii_rule_payload(service: RunningService) -> None:
    request = b"admin.vm.firewall.Set+ dom0 name work\0action=accept\ncomment=\xff\xfe\n"
    fields = error_fields(exchange(service.socket_path, request))
    assert fields[0] == b"QubesValueError" and b"line 2" in fields[2]
    assert not service.firewall_xml("work").exists()
    still_serving(service)


def test_oversized_payload_gets_a_refusal(service: RunningService) -> None:
    request = b"admin.vm.firewall.Set+ dom0 name work\0" + b"a" * (MAX_PAYLOAD + 10)
    fields = error_fields(exchange(service.socket_path, request))
    assert fields[0] == b"ProtocolError" and b"payload larger" in fields[2]
    assert not service.firewall_xml("work").exists()
    still_serving(service)


def test_client_gone_mid_request(service: RunningService) -> None:
    for partial in (b"admin.vm.fire", b"admin.vm.firewall.Set+ dom0 name work\0action=acc"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(service.socket_path))
        sock.sendall(partial)
        sock.close()  # no half-close, no wait for the reply
    still_serving(service)
    assert not service.firewall_xml("work").exists()


def test_client_that_never_finishes_is_timed_out(service: RunningService) -> None:
    # The fixture's service gives each request 2 s to arrive.
    reply = exchange(service.socket_path, b"admin.vm.List+ dom0 na", half_close=False)
    fields = error_fields(reply)
    assert fields[0] == b"ProtocolError" and b"not complete" in fields[2]
    still_serving(service)


def test_many_bad_clients_then_a_good_one(service: RunningService) -> None:
    for _ in range(50):
        exchange(service.socket_path, b"\0\0\0garbage")
    still_serving(service)
