"""Which file to ship: one rule for the build's preferred file, the build report's advice and
`featherface bench --pick`, so that the three cannot disagree on the same timings."""
from __future__ import annotations

import math
from collections.abc import Mapping

SAME_SPEED = 0.05  # files within 5 % of the fastest count as equally fast: the smaller one is advised


def fastest(times_ms: Mapping[str, float], sizes: Mapping[str, int | None]) -> str:
    """The name to ship or prefer: among those within `SAME_SPEED` of the fastest time, the
    smallest file (an unknown size counts as the largest), then the faster."""
    best = min(times_ms.values())
    near = [name for name, ms in times_ms.items() if ms <= best * (1 + SAME_SPEED)]
    return min(near, key=lambda name: (math.inf if sizes[name] is None else sizes[name], times_ms[name]))
