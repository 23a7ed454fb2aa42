"""Accuracy-aware mixed precision: keep the most sensitive groups of ops in float, one
group at a time, until the quantized file holds the AP budget (or fail clearly)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from featherface.records import LayerError, SearchStepRecord
from featherface.widerface import WiderAP

from .accuracy import APBudget
from .graph import STRUCTURAL_GROUPS, Graph

RANKED_GROUP_SIZE = 8  # ops per group beyond the structural ones, most sensitive first
RANKED_GROUPS = 3


@dataclass(frozen=True)
class FloatGroup:
    name: str
    scopes: tuple[str, ...]
    added_nmse: float  # the group's summed share of the quantization error


@dataclass
class SearchStep:
    kept_float: list[str]  # group names
    ap: WiderAP
    size_bytes: int | None
    losses: dict[str, float]
    holds: bool

    def to_record(self) -> SearchStepRecord:
        """The manifest's search step: AP as fractions beside the file's size."""
        return SearchStepRecord(list(self.kept_float), self.ap.by_setting(), self.losses, self.holds, self.ap.images, self.size_bytes)


@dataclass
class SearchResult:
    steps: list[SearchStep] = field(default_factory=list)

    @property
    def final(self) -> SearchStep:
        return self.steps[-1]


class BudgetNotMet(RuntimeError):
    """The AP budget does not hold even with `kept_float` in float (every group the search
    tried, or nothing for a file that cannot be searched); `steps` are the search's files."""

    def __init__(self, kept_float: list[str], losses: dict[str, float], budget: APBudget, why: str = "",
                 steps: list[SearchStep] | None = None) -> None:
        super().__init__(
            f"full INT8 stays outside the AP budget ({budget.describe()}) even with "
            f"{', '.join(kept_float) or 'nothing'} in float: lost "
            + ", ".join(f"{k} {v:.2f}" for k, v in losses.items()) + (f" ({why})" if why else "")
        )
        self.steps = steps or []


def float_groups(graph: Graph, errors: list[LayerError]) -> list[FloatGroup]:
    """Structural groups ranked by their measured error share, then the most sensitive
    remaining ops in groups of RANKED_GROUP_SIZE."""
    added = {e.tensor: e.added_nmse for e in errors}
    structural = []
    claimed: set[str] = set()
    for name, select in STRUCTURAL_GROUPS.items():
        scopes = tuple(op.scope for op in select(graph) if op.scope not in claimed)
        if scopes:
            claimed.update(scopes)
            structural.append(FloatGroup(name, scopes, sum(added.get(s, 0.0) for s in scopes)))
    structural.sort(key=lambda g: g.added_nmse, reverse=True)
    rest = [e for e in errors if e.tensor not in claimed and e.added_nmse > 0]
    ranked = [
        FloatGroup(f"most sensitive ops {i * RANKED_GROUP_SIZE + 1}-{(i + 1) * RANKED_GROUP_SIZE}",
                   tuple(e.tensor for e in chunk), sum(e.added_nmse for e in chunk))
        for i in range(RANKED_GROUPS)
        if (chunk := rest[i * RANKED_GROUP_SIZE : (i + 1) * RANKED_GROUP_SIZE])
    ]
    return structural + ranked


def search(
    groups: list[FloatGroup],
    evaluate: Callable[[tuple[str, ...]], tuple[WiderAP, int | None]],
    reference: WiderAP,
    budget: APBudget,
    progress: Callable[[str], None] = lambda _: None,
) -> SearchResult:
    """Evaluate full INT8, then add one group to the float set at a time until
    `budget.holds`. `evaluate(float_scopes)` returns the AP and the size of that file."""
    result = SearchResult()
    kept: list[FloatGroup] = []
    for next_group in [None, *groups]:
        if next_group is not None:
            kept.append(next_group)
        scopes = tuple(s for g in kept for s in g.scopes)
        ap, size_bytes = evaluate(scopes)
        step = SearchStep([g.name for g in kept], ap, size_bytes, budget.losses(reference, ap), budget.holds(reference, ap))
        result.steps.append(step)
        progress(f"float: {', '.join(step.kept_float) or 'none'} -> lost " + ", ".join(f"{k} {v:.2f}" for k, v in step.losses.items())
                 + (" (within budget)" if step.holds else ""))
        if step.holds:
            return result
    raise BudgetNotMet(result.final.kept_float, result.final.losses, budget, steps=result.steps)
