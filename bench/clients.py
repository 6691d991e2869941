"""The clients the bench runs in the lan namespace: iperf3 and the latency probe."""

import json
from dataclasses import dataclass

from .chain import CONGESTION, Chain, probe_argv
from .processes import BenchError


@dataclass(frozen=True)
class Throughput:
    gbits: float
    retransmits: int
    congestion: tuple[str, str]  # (sender, receiver): proves the forced algorithm was used


def iperf(chain: Chain, host: str, port: int, seconds: float, omit: int) -> Throughput:
    """One TCP stream lan -> host:port; the receiver's rate after `omit` seconds of ramp-up."""
    argv = ["iperf3", "-c", host, "-p", str(port), "-C", CONGESTION, "-J"]
    argv += ["-t", f"{seconds:g}", "-O", str(omit)]
    untrusted = json.loads(chain.run("lan", argv))
    if "error" in untrusted:
        raise BenchError(f"iperf3 to {host}:{port}: {untrusted['error']}")
    end = untrusted["end"]
    congestion = (str(end.get("sender_tcp_congestion")), str(end.get("receiver_tcp_congestion")))
    if congestion != (CONGESTION, CONGESTION):
        raise BenchError(f"iperf3 to {host}:{port} ran with {congestion}, not {CONGESTION}")
    return Throughput(
        gbits=float(end["sum_received"]["bits_per_second"]) / 1e9,
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
        congestion=congestion,
    )


@dataclass(frozen=True)
class Latencies:
    connect_s: list[float]
    first_byte_s: list[float]
    failures: int


def connections(chain: Chain, host: str, port: int, count: int) -> Latencies:
    """`count` sequential connections from lan, each closed by the client first."""
    out = chain.run(
        "lan", probe_argv("connect", "--host", host, "--port", str(port), "--count", str(count))
    )
    untrusted = json.loads(out)
    return Latencies(
        connect_s=[float(v) for v in untrusted["connect_s"]],
        first_byte_s=[float(v) for v in untrusted["first_byte_s"]],
        failures=int(untrusted["failures"]),
    )
