"""Statistics of repeated measurements: medians, means, percentiles, ratios (pure)."""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0-100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = math.ceil(position)
    if below == above:
        return float(ordered[below])
    weight = position - below
    low, high = ordered[below], ordered[above]
    # low + (high - low) * w stays within [low, high]; the two-product form can underflow.
    return min(max(low + (high - low) * weight, low), high)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Summary:
    """One sample set in the units it was taken in."""

    count: int
    mean: float
    p50: float
    p99: float
    minimum: float
    maximum: float

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)

    def scaled(self, factor: float) -> "Summary":
        """The same summary in other units (e.g. seconds to milliseconds)."""
        return Summary(
            self.count,
            self.mean * factor,
            self.p50 * factor,
            self.p99 * factor,
            self.minimum * factor,
            self.maximum * factor,
        )


def summarize(values: Sequence[float]) -> Summary:
    return Summary(
        count=len(values),
        mean=mean(values),
        p50=percentile(values, 50.0),
        p99=percentile(values, 99.0),
        minimum=float(min(values)),
        maximum=float(max(values)),
    )


def median_of_summaries(summaries: Sequence[Summary]) -> Summary:
    """Field by field median over repeats: one noisy repeat cannot move the result alone."""
    if not summaries:
        raise ValueError("median of no summaries")
    return Summary(
        count=sum(s.count for s in summaries),
        mean=median([s.mean for s in summaries]),
        p50=median([s.p50 for s in summaries]),
        p99=median([s.p99 for s in summaries]),
        minimum=min(s.minimum for s in summaries),
        maximum=max(s.maximum for s in summaries),
    )
