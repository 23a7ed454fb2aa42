"""Figures in words for people: one wording everywhere (bench table, build report)."""
from __future__ import annotations


def speed_words(time_ratio: float) -> str:
    """A time ratio (this file's time / the other's) in words that cannot be read the wrong way
    round: 1.34 -> "1.34x slower", 0.70 -> "1.43x faster", within half a percent -> "same speed"."""
    if abs(time_ratio - 1.0) < 0.005:
        return "same speed"
    return f"{time_ratio:.2f}x slower" if time_ratio > 1.0 else f"{1.0 / time_ratio:.2f}x faster"
