"""Presenting a bench report: a text table (stdout), bench.json, bench.md and bench.png.

The plot needs matplotlib, which the device SDK does not require: without it the plot is
skipped with a note, everything else is written.
"""
from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

from featherface.atomic import atomic_path, write_text_atomic
from featherface.choice import fastest
from featherface.units import speed_words

from .records import BenchReport, BenchResult

COLUMNS = ("file", "thr", "load ms", "model p50", "p90", "p99", "mean", "total p50", "p90", "p99", "mean", "pre p50", "post p50",
           "pre+post", "img/s", "RSS MB", "parity", "vs base")


def _ms(value) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _ratio(result: BenchResult) -> str:
    ratio = result.ratio_to_baseline
    if ratio is None:
        return "-"
    if ratio.baseline == result.label:
        return "base"
    return f"{speed_words(ratio.total)} (model {speed_words(ratio.model)})"


def row(result: BenchResult) -> list[str]:
    model, total = result.model_ms, result.total_ms
    return [
        result.label, str(result.threads or "-"), _ms(result.load_ms),
        _ms(model.p50), _ms(model.p90), _ms(model.p99), _ms(model.mean),
        _ms(total.p50), _ms(total.p90), _ms(total.p99), _ms(total.mean),
        _ms(result.pre_ms.p50), _ms(result.post_ms.p50),
        "-" if result.pre_post_share is None else f"{100 * result.pre_post_share:.0f} %",
        f"{result.throughput:.1f}", "-" if result.peak_rss_mb is None else f"{result.peak_rss_mb:.0f}",
        "pass" if result.passed else "FAIL", _ratio(result),
    ]


def text_table(rows: list[list[str]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))) for cells in [list(header), *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def parity_lines(report: BenchReport) -> list[str]:
    lines = []
    for result in report.results:
        where = result.label + (f" @{result.threads} threads" if result.threads else "")
        if not result.passed:
            lines.append(f"parity FAIL {where}: " + "; ".join(result.parity.reasons))
    return lines


def fastest_passing(results: list[BenchResult], threads: int | None) -> BenchResult | None:
    """The result at `threads` to ship on this device, by the build's rule (`choice.fastest`)
    on whole-detect p50 among those that passed parity; None when none passed."""
    passed = {r.label: r for r in results if r.threads == threads and r.passed}
    if not passed:
        return None
    return passed[fastest({k: r.total_ms.p50 for k, r in passed.items()}, {k: r.size_bytes for k, r in passed.items()})]


def fastest_lines(report: BenchReport) -> list[str]:
    """Per thread count, `fastest_passing` in words."""
    lines = []
    for threads in dict.fromkeys(r.threads for r in report.results):
        best = fastest_passing(report.results, threads)
        where = f"{threads} thread{'s' if threads != 1 else ''}" if threads else "the runtime's threads"
        if best is None:
            lines.append(f"fastest at {where}: none, no file passed parity")
            continue
        lines.append(f"fastest at {where} that passed parity: {best.label} (detect p50 {_ms(best.total_ms.p50)} ms, "
                     f"model p50 {_ms(best.model_ms.p50)} ms)")
    return lines


def summary_text(report: BenchReport) -> str:
    """What the command prints on stdout without --json."""
    settings, frame, results = report.settings, report.settings.frame, report.results
    lines = [
        f"device: {report.device.line()}",
        f"frame: {frame.width}x{frame.height}, {frame.source}",
        f"{settings.runs} timed runs after {settings.warmup} warm-up, interleaved; latencies in ms; "
        f"'vs base' = whole detect (and model alone) against {settings.baseline}: median per-round time ratio, "
        "in words (1.34x slower = 1.34 times its time)",
        "",
        *text_table([row(r) for r in results], COLUMNS),
        "",
    ]
    lines += parity_lines(report) or [f"parity: all {len(results)} pass on {len(results[0].parity.images)} golden images"]
    lines += fastest_lines(report)
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------- Markdown


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def _bound(value) -> str:
    return "-" if value is None else f"{value:.2e}"


def markdown(report: BenchReport, plot_name: str | None) -> str:
    device, settings, frame = report.device, report.settings, report.settings.frame
    lines = [
        "# FeatherFace device benchmark",
        "",
        f"{report.created}, {report.wall_seconds} s.",
        "",
        "## Device",
        "",
        *_md_table(["", ""], [
            ["CPU", f"{device.cpu} ({device.machine})"],
            ["Cores", f"{device.usable_cores} usable of {device.cores}"],
            ["Memory", "-" if device.memory_mb is None else f"{device.memory_mb:.0f} MiB"],
            ["OS", device.os],
            ["Python", device.python],
            ["Runtimes", ", ".join(f"{name} {version}" for name, version in device.runtimes.items())],
            ["CPU governor", device.cpu_governor or "not readable"],
            ["CPU max", "-" if device.cpu_max_mhz is None else f"{device.cpu_max_mhz} MHz"],
            ["featherface", device.featherface],
        ]),
        "",
        "## Method",
        "",
        f"- {settings.warmup} warm-up rounds, then {settings.runs} timed rounds; {settings.schedule}.",
        "- `model_ms`: the runtime's run on a prepared input; `total_ms`: `Detector.detect` on a decoded RGB "
        f"frame ({frame.width}x{frame.height}, {frame.source}): "
        "letterbox + normalise (`pre_ms`), inference, decode + NMS (`post_ms`), timed stage by stage in the same "
        "runs; pre+post: their medians' share of the median `total_ms`.",
        "- Throughput: images/s of one sequential stream, 1000 / mean `total_ms`.",
        f"- Ratios: {settings.ratio}; baseline `{settings.baseline}`.",
        "- `load_ms`: manifest read + sha256 check + runtime open (what `Detector.load` does); peak RSS: a "
        "separate process loading only that file (`memory_scope` isolated) unless noted.",
        "",
        "## Latency (ms)",
        "",
        *_md_table(list(COLUMNS), [row(r) for r in report.results]),
        "",
    ]
    if plot_name:
        lines += [f"![latency]({plot_name})", ""]
    lines += ["## Parity on the golden vectors", "",
              "Against PyTorch FP32's stored outputs, same bars as the build (featherface.config.PARITY_THRESHOLDS).", ""]
    parity_rows = []
    for result in report.results:
        parity, detections = result.parity, result.parity.detections
        errors = ", ".join(f"{name} {_bound(error.max_abs_error)} / {_bound(parity.error_bounds.get(name))}" for name, error in parity.tensor.items())
        parity_rows.append([
            result.label, str(result.threads or "-"), result.precision or "-", parity.status, errors or "-",
            f"{detections.robust_recall:.3f} / {detections.robust_precision:.3f}" if detections else "-",
            "; ".join(parity.reasons) or "-",
        ])
    lines += _md_table(["file", "threads", "precision", "status", "max abs error / bound", "robust recall / precision", "reasons"], parity_rows)
    lines += ["", "## What to ship on this device", ""] + [f"- {line}" for line in fastest_lines(report)]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plot


def plot(report: BenchReport, path: Path) -> str | None:
    """Box plots of model_ms and total_ms per file and thread count; None, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no latency plot (pip install matplotlib)"
    results = report.results
    figure, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.5 * len(results)), sharey=True, squeeze=False)
    model_runs, detect_runs = [r.samples_ms.model for r in results], [r.samples_ms.total for r in results]
    for axis, runs, title in ((axes[0][0], model_runs, "model_ms"), (axes[0][1], detect_runs, "total_ms")):
        # `orientation` since matplotlib 3.10 (`vert` deprecated there), `vert` before.
        horizontal = {"orientation": "horizontal"} if "orientation" in inspect.signature(axis.boxplot).parameters else {"vert": False}
        axis.boxplot(runs, whis=(1, 99), showfliers=False, **horizontal)
        axis.set_yticks(range(1, len(results) + 1), [r.where for r in results])
        axis.set_title(title)
        axis.set_xlabel("ms (box: quartiles, whiskers: p1-p99)")
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()
    figure.suptitle(f"{report.device.cpu}, {report.settings.runs} runs", fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return None


def write_reports(report: BenchReport, out_dir: Path) -> list[Path]:
    """bench.json, bench.md and (with matplotlib) bench.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    png = out_dir / "bench.png"
    problem = plot(report, png)
    if problem:
        report.notes.append(problem)
    else:
        written.append(png)
    written.insert(0, write_text_atomic(out_dir / "bench.json", json.dumps(report.to_json(), indent=2) + "\n"))
    written.insert(1, write_text_atomic(out_dir / "bench.md", markdown(report, None if problem else png.name)))
    return written
