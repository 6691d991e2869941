"""Request-to-working-mapping latency: natpmpc asks, a peer connects until it gets through.

Server-agnostic, so the benchmark suite can run it against natd and against miniupnpd serving
the same client in the same lab. Each sample: start `natpmpc -a`, then poll a TCP connection
from `peer_host` to the outside address and mapped port until the service in the client
qube answers; the time from the request to that first answer is the sample. The mapping is
removed (lifetime 0) after each sample.
"""

import re
import subprocess
import time
from dataclasses import dataclass

from ..lab.builder import Lab

MAPPED_RE = re.compile(r"Mapped public port (\d+) protocol TCP")
SAMPLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class LatencySample:
    answered: float  # seconds until natpmpc printed the mapping
    working: float  # seconds until a peer's connection got the service's answer


def _natpmpc(lab: Lab, host: str, gateway: str, *argv: str) -> subprocess.CompletedProcess[str]:
    command = ["timeout", "20", "stdbuf", "-oL", "natpmpc", "-g", gateway, *argv]
    return lab.run(host, command, capture_output=True, text=True, cwd="/")


def _answers(lab: Lab, peer: str, source: str, address: str, port: int) -> bool:
    done = lab.run(
        peer,
        ["socat", "-T", "1", "-", f"TCP:{address}:{port},bind={source},connect-timeout=1"],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.returncode == 0 and bool(done.stdout.strip())


def measure_mapping_latency(
    lab: Lab,
    client: str,
    gateway: str,
    service_port: int,
    peer: str,
    peer_source: str,
    outside_address: str,
    repeats: int = 5,
    first_public_port: int = 20000,
) -> list[LatencySample]:
    """`repeats` samples; a server answering on `service_port` in `client` must be running."""
    samples = []
    for index in range(repeats):
        wanted = first_public_port + index
        started = time.monotonic()
        done = _natpmpc(lab, client, gateway, "-a", str(wanted), str(service_port), "tcp", "60")
        answered = time.monotonic() - started
        found = MAPPED_RE.search(done.stdout)
        if found is None:
            raise RuntimeError(f"no mapping: {done.stdout} {done.stderr}")
        port = int(found.group(1))
        while not _answers(lab, peer, peer_source, outside_address, port):
            if time.monotonic() - started > SAMPLE_TIMEOUT:
                raise RuntimeError(f"{outside_address}:{port} never answered")
        samples.append(LatencySample(answered, time.monotonic() - started))
        _natpmpc(lab, client, gateway, "-a", str(port), str(service_port), "tcp", "0")
    return samples
