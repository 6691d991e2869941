"""A real admin service on a temp socket for the CLI tests (no root, no agents)."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qubes_lab import admin_launcher as launcher
from qubes_lab.qubesd.topology_json import topology_to_json
from qubes_portfwd.model.topology import Qube, Topology

BOOT_ID = "5eed5eed-0000-4000-8000-000000000001"


def cli_topology() -> Topology:
    v6 = {"ipv6": "1"}
    return Topology.of(
        Qube("sys-net", 2, provides_network=True, features=v6),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True, features=v6),
        Qube("work", 6, netvm="sys-firewall", features=v6),
        Qube("personal", 7, netvm="sys-firewall", features=v6),
        Qube("vault", 10),
    )


@pytest.fixture
def admin_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The service's socket, also exported as $QUBESD_SOCKET for the CLIs under test, and its
    status document as $QUBES_PORTFWD_STATUS."""
    (tmp_path / "topology.json").write_text(json.dumps(topology_to_json(cli_topology())))
    (tmp_path / "boot_id").write_text(BOOT_ID + "\n")
    socket_path = tmp_path / "q.sock"  # AF_UNIX paths are limited to 108 bytes
    process = launcher.start(
        socket_path,
        tmp_path / "state",
        topology_file=tmp_path / "topology.json",
        qubesdb_dir=tmp_path / "qubesdb",
        boot_id_file=tmp_path / "boot_id",
        agent_timeout=0.1,
        log_path=tmp_path / "admind.log",
        status_file=tmp_path / "status" / "status.json",
    )
    monkeypatch.setenv("QUBESD_SOCKET", str(socket_path))
    monkeypatch.setenv("QUBES_PORTFWD_STATUS", str(tmp_path / "status" / "status.json"))
    try:
        yield socket_path
    finally:
        launcher.stop(process.pid)
