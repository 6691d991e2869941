"""Contract of the status document: what the controller writes, dom0's tools read back whole.

One adapter on both platforms (a file in dom0; in the lab beside its socket)."""

import json
from pathlib import Path

import pytest

from qubes_portfwd.client.status_reader import StatusMissing, StatusUnavailable, read_status
from qubes_portfwd.controller.status_file import StatusWriter
from qubes_portfwd.model.status_document import QubePath
from qubes_portfwd.model.topology import Qube, Topology

BOOT = "b00710d0-0000-4000-8000-000000000002"


def topology() -> Topology:
    return Topology.of(
        Qube("sys-net", 2, provides_network=True),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True),
        Qube("work", 6, netvm="sys-firewall"),
        Qube("offline", 7, netvm="nowhere"),
    )


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    StatusWriter(path).write(BOOT, topology(), [])

    document = read_status(path)

    assert document.boot_id == BOOT and document.forwards == ()
    assert document.qubes["work"] == QubePath("sys-firewall", ("sys-firewall", "sys-net"))
    assert document.qubes["offline"].path is None and document.qubes["offline"].path_error


def test_the_sequence_goes_on_across_writers(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    StatusWriter(path).write(BOOT, topology(), [])
    first = read_status(path).sequence

    StatusWriter(path).write(BOOT, topology(), [])  # a restarted controller

    assert read_status(path).sequence == first + 1


def test_the_sequence_goes_on_past_a_forward_a_writer_cannot_read(tmp_path: Path) -> None:
    """A restarted controller reads only the sequence: a forward it cannot parse (a newer
    field, a damaged entry) does not send the numbers back to 1."""
    path = tmp_path / "status.json"
    writer = StatusWriter(path)
    for boot in ("1", "2", "3"):  # three different documents: sequence 3
        writer.write(BOOT[:-1] + boot, topology(), [])
    document = json.loads(path.read_bytes())
    document["forwards"] = [{"id": "not a forward"}]
    path.write_text(json.dumps(document))

    StatusWriter(path).write(BOOT, topology(), [])

    assert read_status(path).sequence == 4


def test_no_document_means_no_service(tmp_path: Path) -> None:
    with pytest.raises(StatusMissing):
        read_status(tmp_path / "status.json")


@pytest.mark.parametrize("garbage", [b"", b"{", b'{"version": 99}', b"\xff" * 10])
def test_a_document_of_another_kind_is_refused(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(garbage)

    with pytest.raises(StatusUnavailable):
        read_status(path)
