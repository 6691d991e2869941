"""A lab with natd running in a network qube, and the real clients (natpmpc, upnpc)."""

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient

CLIENT_TIMEOUT = "20"
READY_TIMEOUT = 10.0
REACH_TIMEOUT = 10.0
POLL = 0.05
UPLINK_ADDRESS_KEY = "/qubes-portfwd-uplink-address4"
MAPPED_RE = re.compile(r"Mapped public port (\d+) protocol (TCP|UDP) to local port (\d+)")
UPNP_RE = re.compile(r"external ([0-9.]+):(\d+) (TCP|UDP) is redirected to internal")


@dataclass(frozen=True)
class NatLab:
    lab: Lab
    description_url: str

    @property
    def client(self) -> AdminClient:
        return AdminClient(self.lab.admin_socket)

    @property
    def gateway(self) -> str:
        return str(self.lab.topology["sys-firewall"].address4)

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "QUBESD_SOCKET": str(self.lab.admin_socket)}
        return subprocess.run(
            [sys.executable, "-m", "qubes_portfwd.cli.qvm_portfwd", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def natpmpc(self, host: str, *argv: str, timeout: str = CLIENT_TIMEOUT) -> "Run":
        command = ["timeout", timeout, "stdbuf", "-oL", "natpmpc", "-g", self.gateway, *argv]
        done = self.lab.run(host, command, capture_output=True, text=True, cwd="/")
        return Run(done.returncode, done.stdout, done.stderr)

    def natpmpc_background(self, host: str, *argv: str) -> subprocess.Popen[str]:
        command = ["timeout", "90", "stdbuf", "-oL", "natpmpc", "-g", self.gateway, *argv]
        return self.lab.popen(
            host, command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
        )

    def pcp_map(self, host: str, internal: int, external: int) -> tuple[int, int] | None:
        """(result code, outside port) of one PCP MAP from `host`, None when unanswered."""
        client = str(self.lab.topology[host].address4)
        argv = ["python3", "-c", PCP_CLIENT, self.gateway, client, str(internal), str(external)]
        done = self.lab.run(host, argv, capture_output=True, text=True, cwd="/")
        words = done.stdout.split()
        return (int(words[0]), int(words[1])) if len(words) == 2 else None

    def upnpc(self, host: str, *argv: str) -> "Run":
        command = ["timeout", CLIENT_TIMEOUT, "upnpc", "-u", self.description_url, *argv]
        done = self.lab.run(host, command, capture_output=True, text=True, cwd="/")
        return Run(done.returncode, done.stdout, done.stderr)

    def nat_forwards(self, qube: str) -> list[str]:
        """The comments of `qube`'s forwards made by NAT traversal."""
        comments = []
        for status in self.client.forwards_of(qube):
            if "comment=" in status.rule:
                comment = status.rule.split("comment=", 1)[1]
                if comment.startswith(("NAT-PMP", "PCP", "UPnP")):
                    comments.append(comment)
        return comments

    @classmethod
    def of(cls, lab: Lab, qube: str = "sys-firewall") -> "NatLab":
        """The natd `Lab.up` started in `qube`."""
        return cls(lab, lab.natd_url(qube))

    def reset(self) -> None:
        for qube in ("work", "personal"):
            self.client.nat_policy_set(qube, [])
            for forward_id in self.client.forward_ids(qube):
                self.client.remove_forward(qube, forward_id)
        for entry in self.client.nat_pending():
            self.client.nat_deny(entry["id"])

    @contextmanager
    def cleaned(self) -> Iterator["NatLab"]:
        """No NAT policy, mapping or pending ask of work's or personal's before and after."""
        self.reset()
        try:
            yield self
        finally:
            self.reset()


# One PCP MAP request (RFC 6887) from the qube it runs in; prints "RESULT PORT" or "silent".
PCP_CLIENT = r"""
import ipaddress, os, socket, struct, sys
gateway, client, internal, external = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mapped = ipaddress.IPv6Address(f"::ffff:{client}").packed
request = struct.pack("!BBHI16s", 2, 1, 0, 600, mapped)
request += struct.pack("!12sB3sHH16s", os.urandom(12), 6, bytes(3), internal, external, bytes(16))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for wait in (0.25, 0.5, 1, 2, 4, 8):
    s.sendto(request, (gateway, 5351))
    s.settimeout(wait)
    try:
        reply = s.recv(1100)
    except OSError:
        continue
    print(reply[3], struct.unpack("!H", reply[42:44])[0] if len(reply) >= 60 else 0)
    break
else:
    print("silent")
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def mapped_port(self) -> int:
        found = MAPPED_RE.search(self.stdout)
        assert found, f"no mapping in natpmpc output: {self.stdout} {self.stderr}"
        return int(found.group(1))


@contextmanager
def tcp_server(lab: Lab, host: str, port: int, text: str) -> Iterator[None]:
    """A socat server in `host` that answers every connection with `text`."""
    server = lab.popen(
        host,
        ["socat", f"TCP-LISTEN:{port},reuseaddr,fork", f"SYSTEM:echo {text}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while (
            f":{port}"
            not in lab.run(
                host, ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
            ).stdout
        ):
            assert server.poll() is None and time.monotonic() < deadline, "socat not listening"
            time.sleep(POLL)
        yield
    finally:
        server.terminate()
        server.wait(timeout=5)


def fetch(lab: Lab, host: str, source: str, address: str, port: int) -> str | None:
    """One TCP connection's reply text, or None when it does not connect."""
    done = lab.run(
        host,
        ["socat", "-T", "2", "-", f"TCP:{address}:{port},bind={source},connect-timeout=2"],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def wait_fetch(lab: Lab, host: str, source: str, address: str, port: int) -> str:
    deadline = time.monotonic() + REACH_TIMEOUT
    while True:
        text = fetch(lab, host, source, address, port)
        if text:
            return text
        assert time.monotonic() < deadline, f"{address}:{port} unreachable from {host}"
        time.sleep(POLL)


def natd_answers(env: "NatLab") -> bool:
    """A NAT-PMP public address request from work gets a NAT-PMP reply (any result code)."""
    script = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)\n"
        f"s.sendto(bytes([0, 0]), ('{env.gateway}', 5351))\n"
        "try:\n    print(s.recv(64)[:2].hex())\nexcept OSError:\n    print('silent')\n"
    )
    done = env.lab.run("work", ["python3", "-c", script], capture_output=True, text=True)
    return done.stdout.strip() == "0080"  # version 0, opcode 128: the answer to opcode 0
