"""Spike detection: a bucket that stands out from the buckets before it.

A bucket is a spike when its count is above the mean of the preceding
`window` buckets plus `k` standard deviations, and at least `min_count`: the
second condition keeps a quiet series (0, 0, 0, 1) from alarming. Used by the
dashboard's error chart and by the error-spike alert.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean, pstdev


@dataclass(frozen=True)
class SpikeRule:
    k: float = 3.0
    min_count: int = 5
    window: int = 24  # how many preceding buckets form the baseline

    def __post_init__(self) -> None:
        if self.k < 0 or self.min_count < 0 or self.window < 1:
            raise ValueError("k and min_count must be >= 0 and window >= 1")


def threshold(history: Sequence[float], rule: SpikeRule) -> float:
    """The count a bucket must exceed to be a spike after `history`."""
    if not history:
        return float("inf")  # nothing to compare with: never a spike
    baseline = history[-rule.window :]
    return fmean(baseline) + rule.k * pstdev(baseline)


def is_spike(count: float, history: Sequence[float], rule: SpikeRule) -> bool:
    return count >= rule.min_count and count > threshold(history, rule)


def spike_indexes(counts: Sequence[float], rule: SpikeRule) -> set[int]:
    """Indexes of the buckets in `counts` (oldest first) that are spikes."""
    return {i for i, c in enumerate(counts) if is_spike(c, counts[:i], rule)}


# --- Against the same window on past days (the error-spike alert) -------------------


@dataclass(frozen=True)
class BaselineRule:
    """A count is a spike when above `multiplier` times the mean of its baseline.

    The baseline is the same window on each of the past days, so a daily rhythm
    (a nightly import that always errs a little) does not alarm; `min_count`
    keeps a quiet service (1 error against a baseline of 0) from alarming.
    """

    multiplier: float = 3.0
    min_count: int = 10

    def __post_init__(self) -> None:
        if self.multiplier < 0 or self.min_count < 0:
            raise ValueError("multiplier and min_count must be >= 0")


def baseline_threshold(baseline: Sequence[float], rule: BaselineRule) -> float:
    """The count a window must exceed; an empty baseline counts as a mean of 0."""
    return rule.multiplier * (fmean(baseline) if baseline else 0.0)


def exceeds_baseline(count: float, baseline: Sequence[float], rule: BaselineRule) -> bool:
    return count >= rule.min_count and count > baseline_threshold(baseline, rule)
