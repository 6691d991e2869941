"""How much the suite measures: the full run, or `--quick` for development."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Settings:
    repeats: int  # of every throughput/latency cell; medians are taken over them
    iperf_seconds: float
    iperf_omit: int  # seconds of ramp-up iperf3 leaves out
    connections: int  # per latency cell
    forward_counts: tuple[int, ...]  # rule-count scaling
    propagation_adds: int
    add_scaling_loads: tuple[int, int]  # forwards on the host for the two add series
    add_scaling_adds: int  # adds timed at each load
    convergence_forwards: int
    rest_seconds: float  # CPU at rest is averaged over this window
    # The later window, the verdict's: longer than admind's 30 s insurance re-plan, so a
    # timer of up to 30 s wakes inside it and is counted.
    rest_later_seconds: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


FULL = Settings(
    repeats=5,
    iperf_seconds=5.0,
    iperf_omit=1,
    connections=2000,
    forward_counts=(1, 100, 1000, 10000),
    propagation_adds=100,
    add_scaling_loads=(10, 1000),
    add_scaling_adds=100,
    convergence_forwards=10000,
    rest_seconds=10.0,
    rest_later_seconds=35.0,
)

QUICK = Settings(
    repeats=2,
    iperf_seconds=1.0,
    iperf_omit=0,
    connections=200,
    forward_counts=(1, 100, 1000),
    propagation_adds=10,
    add_scaling_loads=(10, 300),
    add_scaling_adds=10,
    convergence_forwards=1000,
    rest_seconds=2.0,
    rest_later_seconds=2.0,
)
