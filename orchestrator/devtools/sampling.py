"""What the benchmark's two halves share: latency samples, and lead ids sampled from the events.

orchestrator/devtools/bench.py times the audit store and orchestrator/devtools/bench_views.py
the dashboard; both report percentiles of a Timing and pick realistic leads
with sample_lead_ids.
"""

import math
import random
from dataclasses import dataclass

from audit.models import AuditEvent


@dataclass
class Timing:
    """Latency samples of one operation, in seconds."""

    samples: list[float]

    def pct(self, p: float) -> float:
        # Nearest rank: p99 of 2000 samples is the 1980th, an observed value.
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def summary(self) -> dict[str, float | int]:
        return {
            "n": len(self.samples),
            "p50_ms": round(self.pct(50) * 1000, 4),
            "p95_ms": round(self.pct(95) * 1000, 4),
            "p99_ms": round(self.pct(99) * 1000, 4),
            "max_ms": round(max(self.samples) * 1000, 4),
        }


def sample_lead_ids(k: int, *, rng: random.Random) -> list[str]:
    """k lead ids (distinct while the database has enough), found through random event ids."""
    bounds = AuditEvent.objects.order_by("id").values_list("id", flat=True)
    low, high = bounds.first(), bounds.last()
    if low is None or high is None:
        return []
    found: dict[str, None] = {}
    for _attempt in range(20):
        ids = [rng.randint(low, high) for _ in range(2 * k)]
        for lead in (
            AuditEvent.objects.filter(id__in=ids)
            .exclude(lead_public_id="")
            .values_list("lead_public_id", flat=True)
        ):
            found.setdefault(lead)
        if len(found) >= k:
            break
    leads = list(found)[:k]
    return [leads[i % len(leads)] for i in range(k)] if leads else []
