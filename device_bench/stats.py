"""Pure functions of the bench: latency statistics and the interleaved run schedule.

No I/O, no runtime, no NumPy needed: easy to test by hand and to port (the Swift harness in
`ios/` implements the same percentile).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) by linear interpolation between closest ranks.

    Rank r = q / 100 x (n - 1) on the sorted samples (0-based); the value is interpolated
    between the samples at floor(r) and ceil(r). This is NumPy's default ("linear",
    Hyndman-Fan type 7): for 1..10, p50 = 5.5, p90 = 9.1, p99 = 9.91.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    ordered = sorted(float(s) for s in samples)
    rank = q / 100.0 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """min / p50 / p90 / p99 / mean / max of latency samples (same unit), and their count n."""
    if not samples:
        raise ValueError("no samples to summarize")
    values = [float(s) for s in samples]
    return {
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": math.fsum(values) / len(values),
        "max": max(values),
        "n": len(values),
    }


def throughput(mean_ms: float) -> float:
    """Images per second of one sequential stream whose mean latency is `mean_ms`."""
    if mean_ms <= 0:
        raise ValueError(f"mean latency must be positive, got {mean_ms}")
    return 1000.0 / mean_ms


def paired_ratio(samples: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of the per-round ratios samples[i] / baseline[i].

    With interleaved runs, round i of two files ran back to back, under the same machine
    load; the median of their ratios cancels most of the noise a ratio of two medians
    would keep (a burst of load during the run hits both files of a round alike).
    """
    if len(samples) != len(baseline) or not samples:
        raise ValueError(f"paired ratio needs two equally long, non-empty series ({len(samples)} vs {len(baseline)})")
    if min(baseline) <= 0:
        raise ValueError("baseline latencies must be positive")
    return percentile([a / b for a, b in zip(samples, baseline)], 50)


@dataclass(frozen=True)
class Step:
    """One run in the schedule: which target, what kind of run, which round, timed or not."""

    target: int  # index into the benchmarked files
    kind: str  # e.g. "model" (the runtime alone) or "total" (the whole detect)
    round: int  # 0-based within its phase
    timed: bool  # False: warm-up, never recorded


def interleaved_schedule(targets: int, warmup: int, runs: int, kinds: Sequence[str] = ("model", "total")) -> list[Step]:
    """Warm-up rounds then timed rounds; in each round every kind of run goes through every
    target once, in order.

    Two files A, B, one kind, warmup 1, runs 2: A B (warm-up) then A B A B (timed). A slow
    spell of the machine thus lands on every file alike instead of on whichever ran then.
    With kinds ("model", "total") a round is A.model B.model A.total B.total: each timed
    call follows another file's call (two or more files), for both kinds alike.
    """
    if targets < 1:
        raise ValueError(f"need at least one target, got {targets}")
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    if not kinds:
        raise ValueError("need at least one kind of run")
    phases = ((False, warmup), (True, runs))
    return [
        Step(target, kind, round_, timed)
        for timed, count in phases for round_ in range(count) for kind in kinds for target in range(targets)
    ]
