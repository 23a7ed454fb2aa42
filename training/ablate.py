"""Ablation of V2 Ultra: the same training budget for the full network, for each
innovation switched off in turn, and without distillation; one table of AP, parameters,
MACs and latency (`ablation.md`, `.csv`, `.json` in the output directory).

Runs are sequential in one process; each keeps its run directory, so an interrupted
ablation continues where it stopped (runs resume from their `resume.pth`).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from featherface.atomic import atomic_path, write_text_atomic
from featherface.config import DEFAULT_INPUT_SIZE, WIDER_EVAL_THRESHOLDS
from featherface.model.profile import count_macs, parameter_counts
from featherface.model.v2_ultra import INNOVATIONS, FeatherFaceV2UltraConfig
from featherface.paths import WIDERFACE

from .evaluate import evaluate_model, protocol_name
from .run_config import TeacherConfig, TrainConfig
from .trainer import train

__all__ = ["AblationRun", "ablate", "default_runs", "measure_latency", "render_table"]


@dataclass(frozen=True)
class AblationRun:
    name: str
    switched: tuple[str, ...] = ()  # innovations flipped from v2-ultra's default
    distill: bool = True


def default_runs(innovations: Sequence[str] | None = None, distillation_off: bool = True) -> list[AblationRun]:
    """The default network (distilled), each innovation flipped in turn (`no_X` for one on
    by default, `with_X` for one off), then no distillation."""
    default = FeatherFaceV2UltraConfig()
    runs = [AblationRun("default")]
    runs += [AblationRun(f"{'no' if getattr(default, n) else 'with'}_{n}", (n,)) for n in (innovations or INNOVATIONS)]
    if distillation_off:
        runs.append(AblationRun("no_distillation", distill=False))
    return runs


@torch.no_grad()
def measure_latency(model: nn.Module, size: int, repeats: int = 10, warmup: int = 2) -> float:
    """Median milliseconds of one forward pass on a size x size input (current torch threads)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, size, size)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(times)


COLUMNS = ("run", "switched", "distillation", "params", "macs", "latency_ms", "easy", "medium", "hard", "epochs", "train_minutes")


def render_table(rows: list[dict], eval_protocol: str, latency_size: int) -> str:
    """Markdown table of the ablation rows."""
    lines = [
        f"AP on WIDER_val ({eval_protocol}, conf {WIDER_EVAL_THRESHOLDS.score:g}, NMS {WIDER_EVAL_THRESHOLDS.nms_iou:g}); MACs and latency at {latency_size}x{latency_size}, "
        f"latency = median forward on {torch.get_num_threads()} CPU thread(s).",
        "",
        "| run | switched | distillation | params | MACs | latency ms | easy | medium | hard | epochs | train min |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['switched'] or '-'} | {'yes' if r['distillation'] else 'no'} | {r['params']:,} | "
            f"{r['macs'] / 1e6:.1f}M | {r['latency_ms']:.1f} | {r['easy']:.4f} | {r['medium']:.4f} | {r['hard']:.4f} | "
            f"{r['epochs']} | {r['train_minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def ablate(
    base: TrainConfig,
    runs: Sequence[AblationRun] | None = None,
    out_dir: str | Path = "runs/ablate",
    eval_size: int | None = DEFAULT_INPUT_SIZE,
    eval_limit: int = 0,
    latency_size: int = DEFAULT_INPUT_SIZE,
    widerface_root: str | Path = WIDERFACE,
    progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> list[dict]:
    """Train every run with `base`'s settings (only the switches differ), evaluate, tabulate.

    Returns the table rows; the files are rewritten after each run so partial results
    survive an interruption.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = base.teacher or TeacherConfig()
    rows: list[dict] = []
    for run in runs or default_runs():
        config = dataclasses.replace(
            base, arch="v2-ultra", out_dir=str(out / run.name), switched_innovations=run.switched,
            teacher=teacher if run.distill else None, save=None, resume=True,
        )
        progress(f"ablation run {run.name}: switched {list(run.switched) or 'none'}, distillation {'on' if run.distill else 'off'}")
        result = train(config, progress)
        ap = evaluate_model(result.model, widerface_root, eval_size, limit=eval_limit, progress=progress)
        rows.append({
            "run": run.name,
            "switched": ",".join(run.switched),
            "distillation": run.distill,
            "params": parameter_counts(result.model)["params"],
            "macs": count_macs(result.model, latency_size)["macs"],
            "latency_ms": round(measure_latency(result.model, latency_size), 2),
            **ap.by_setting(),
            "epochs": result.epochs_done,
            "train_minutes": round(sum(r["seconds"] for r in result.history) / 60, 2),
        })
        write_text_atomic(out / "ablation.md", render_table(rows, protocol_name(eval_size), latency_size))
        write_text_atomic(out / "ablation.json", json.dumps(rows, indent=2) + "\n")
        with atomic_path(out / "ablation.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return rows
