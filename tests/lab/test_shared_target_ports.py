"""Several forwards to one port of one qube (issue 14 item 4), with real packets in the lab.

work serves one port, 8080, reached by three forwards at once: `lan` (external, edge port
80, from one LAN client and the qubes' range), `inner` (internal, sys-firewall's port 80,
from personal) and `second` (external, edge port 81, from the other LAN client). sys-firewall
holds port 80 on both its sides. Each is reachable only from its own sources, and deleting
one ends only its own flows: the others' running connections keep their tracked flows at
every hop and keep moving data.
"""

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from servers import ask, background, peer_server, wait_for
from test_lifecycle_support import Env, flow_present, read_line

from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

APPLY_TIMEOUT = 30.0
CUT_TIMEOUT = 10.0
PROGRESS_TIMEOUT = 5.0
PORT = 8080
EXTERNAL_PATH = ("sys-net", "sys-firewall", "work")
INTERNAL_PATH = ("sys-firewall", "work")

# Sends to every client until it goes, a chunk every 10 ms: a download through a forward.
FEEDER = r"""
import socket, sys, threading, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(16)
def feed(c):
    with c:
        try:
            while True:
                c.sendall(b"x" * 16384)
                time.sleep(0.01)
        except OSError:
            pass
while True:
    c, _ = s.accept()
    threading.Thread(target=feed, args=(c,), daemon=True).start()
"""

# Downloads from HOST:PORT (bound to SOURCE when given); prints "connected LOCALPORT", then
# "got N" (bytes so far) for each line on stdin, "closed …" when the connection ends.
DOWNLOADER = r"""
import select, socket, sys
host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bound = (source, 0) if source else None
s = socket.create_connection((host, port), timeout=5, source_address=bound)
print("connected", s.getsockname()[1], flush=True)
total = 0
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if s in ready:
        try:
            data = s.recv(65536)
        except OSError as e:
            print("closed", type(e).__name__, flush=True)
            break
        if not data:
            print("closed eof", flush=True)
            break
        total += len(data)
    if sys.stdin in ready:
        if not sys.stdin.readline():
            break
        print("got", total, flush=True)
"""


@dataclass(frozen=True)
class Forwards:
    env: Env
    ids: dict[str, str]  # lan, inner, second

    @property
    def lab(self) -> Lab:
        return self.env.lab


@dataclass(frozen=True)
class Download:
    """A running download: where its flow is tracked, and the client to ask for progress."""

    process: subprocess.Popen[str]
    source: str  # the client address every hop sees (no hop masquerades these flows)
    local_port: int
    path: tuple[str, ...]

    def received(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write("?\n")
        self.process.stdin.flush()
        words = read_line(self.process, PROGRESS_TIMEOUT).split()
        assert words[:1] == ["got"], words
        return int(words[1])


def address(lab: Lab, qube: str) -> str:
    return str(lab.topology[qube].address4)


@pytest.fixture
def forwards(lab: Lab) -> Iterator[Forwards]:
    env = Env(lab)
    a = lab.addresses
    qubes_range = "10.137.0.0/16"
    ids: dict[str, str] = {}
    try:
        for name, argv in (
            ("lan", ["80:8080", "--external", "--from", f"{a.lan_clients4[0]}/32,{qubes_range}"]),
            ("inner", ["80:8080", "--internal", "--from", "personal"]),
            ("second", ["81:8080", "--external", "--from", f"{a.lan_clients4[1]}/32"]),
        ):
            ids[name] = env.cli("qvm_portfwd", "add", "work", "tcp", *argv).strip()
        assert wait_for(lambda: all(env.all_hops_applied(i) for i in ids.values()), APPLY_TIMEOUT)
        yield Forwards(env, ids)
    finally:
        for forward_id in ids.values():
            if any(f.id == forward_id for f in env.client.forwards_of("work")):
                env.client.remove_forward("work", forward_id)


@contextmanager
def feeder(lab: Lab) -> Iterator[None]:
    with background(lab, "work", [sys.executable, "-c", FEEDER, str(PORT)]) as server:
        assert wait_for(lambda: server.poll() is not None or listening(lab), 5.0)
        assert server.poll() is None, "the feeder in work exited"
        yield


def listening(lab: Lab) -> bool:
    out = lab.run("work", ["ss", "-Hltn", f"sport = :{PORT}"], capture_output=True, text=True)
    return f":{PORT}" in out.stdout


@contextmanager
def download(
    lab: Lab, host: str, to: str, port: int, source: str, path: tuple[str, ...]
) -> Iterator[Download]:
    argv = [sys.executable, "-c", DOWNLOADER, to, str(port), source]
    process = lab.popen(
        host,
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        words = read_line(process, 10).split()
        assert words[:1] == ["connected"], words
        running = Download(process, source or address(lab, host), int(words[1]), path)
        assert wait_for(lambda: running.received() > 0, PROGRESS_TIMEOUT)
        yield running
    finally:
        process.kill()  # its own process, by PID: a plain child, no group to stop
        process.wait(timeout=5)


def tracked_ids(lab: Lab, host: str, flow: Download) -> list[str]:
    """conntrack's ids of the download's flow in `host` (a deleted, re-made entry differs)."""
    done = lab.run(
        host,
        [
            "conntrack", "-L", "-o", "id", "-p", "tcp",
            "--orig-src", flow.source, "--orig-port-src", str(flow.local_port),
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return re.findall(r"\bid=(\d+)", done.stdout)


Tracked = dict[tuple[int, str], list[str]]


def snapshot(lab: Lab, flows: list[Download]) -> Tracked:
    return {(f.local_port, host): tracked_ids(lab, host, f) for f in flows for host in f.path}


def delete_and_wait_for_its_cut(forwards: Forwards, name: str, witness: Download) -> None:
    """Delete forward `name`; return once its own running flow is gone from every hop."""
    lab = forwards.lab
    forwards.env.cli("qvm_portfwd", "del", forwards.ids[name])
    gone = wait_for(
        lambda: (
            not any(flow_present(lab, h, witness.source, witness.local_port) for h in witness.path)
        ),
        CUT_TIMEOUT,
    )
    assert gone, f"{name}'s own flow is still tracked at a hop"


def assert_still_running(lab: Lab, flows: list[Download], before: Tracked) -> None:
    after = snapshot(lab, flows)
    assert after == before, "a surviving forward's tracked flow was deleted at a hop"
    assert all(ids for ids in after.values()), after
    for flow in flows:
        start = flow.received()
        assert wait_for(lambda f=flow, s=start: f.received() > s, PROGRESS_TIMEOUT), (
            f"the download from {flow.source}:{flow.local_port} stopped"
        )


def test_three_forwards_to_one_port_each_admit_only_their_own_sources(
    lab: Lab, forwards: Forwards
) -> None:
    a = lab.addresses
    edge, first, other = a.edge_lan4, str(a.lan_clients4[0]), str(a.lan_clients4[1])
    firewall, personal = address(lab, "sys-firewall"), address(lab, "personal")
    shown = {f.id: f for f in forwards.env.client.forwards_of("work")}
    assert {shown[i].state for i in forwards.ids.values()} == {"active"}
    with peer_server(lab, "work", "tcp", PORT):
        assert ask(lab, "lan", "tcp", edge, 80, first) == first
        assert ask(lab, "lan", "tcp", edge, 81, other) == other
        assert ask(lab, "personal", "tcp", firewall, 80) == personal
        # No source reaches another forward's port, though all lead to work's 8080.
        assert ask(lab, "lan", "tcp", edge, 80, other) is None
        assert ask(lab, "lan", "tcp", edge, 81, first) is None
        assert ask(lab, "personal", "tcp", firewall, 81) is None
        # `lan` admits the qubes' range on sys-firewall's uplink side only: sys-vpn, behind
        # sys-firewall but not named by `inner`, gets nothing on the downstream side.
        assert ask(lab, "sys-vpn", "tcp", firewall, 80) is None
        assert ask(lab, "lan", "tcp", address(lab, "work"), PORT, first) is None


def test_deleting_one_forward_leaves_the_others_running_connections(
    lab: Lab, forwards: Forwards
) -> None:
    a = lab.addresses
    edge, first, other = str(a.edge_lan4), str(a.lan_clients4[0]), str(a.lan_clients4[1])
    firewall = address(lab, "sys-firewall")
    with (
        feeder(lab),
        download(lab, "lan", edge, 80, first, EXTERNAL_PATH) as through_lan,
        download(lab, "personal", firewall, 80, "", INTERNAL_PATH) as through_inner,
        download(lab, "lan", edge, 81, other, EXTERNAL_PATH) as through_second,
    ):
        survivors = [through_inner, through_second]
        before = snapshot(lab, survivors)
        delete_and_wait_for_its_cut(forwards, "lan", through_lan)
        assert_still_running(lab, survivors, before)
    with peer_server(lab, "work", "tcp", PORT):
        assert ask(lab, "lan", "tcp", edge, 80, first) is None
        assert ask(lab, "personal", "tcp", firewall, 80) == address(lab, "personal")
        assert ask(lab, "lan", "tcp", edge, 81, other) == other


def test_deleting_the_internal_forward_ends_its_flows_though_an_external_one_admits_them(
    lab: Lab, forwards: Forwards
) -> None:
    # `lan` admits personal's address on the same port of the same target, but on
    # sys-firewall's uplink side: personal's flow came from downstream, so it must end.
    a = lab.addresses
    edge, first, other = str(a.edge_lan4), str(a.lan_clients4[0]), str(a.lan_clients4[1])
    firewall = address(lab, "sys-firewall")
    with (
        feeder(lab),
        download(lab, "personal", firewall, 80, "", INTERNAL_PATH) as through_inner,
        download(lab, "lan", edge, 80, first, EXTERNAL_PATH) as through_lan,
        download(lab, "lan", edge, 81, other, EXTERNAL_PATH) as through_second,
    ):
        survivors = [through_lan, through_second]
        before = snapshot(lab, survivors)
        gone = ("sys-firewall",)  # at work, `lan` still admits personal: the flow may stay
        witness = Download(through_inner.process, through_inner.source,
                           through_inner.local_port, gone)  # fmt: skip
        delete_and_wait_for_its_cut(forwards, "inner", witness)
        assert_still_running(lab, survivors, before)
    with peer_server(lab, "work", "tcp", PORT):
        assert ask(lab, "personal", "tcp", firewall, 80) is None
        assert ask(lab, "lan", "tcp", edge, 80, first) == first
