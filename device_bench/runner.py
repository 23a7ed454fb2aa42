"""The benchmark: open every target at each thread count, time model and whole-detect runs
interleaved across targets, check parity on the golden vectors, measure peak memory.

model_ms: the runtime's `run` on a prepared input (already letterboxed, normalised and in
the runtime's layout and dtype). total_ms: `Detector.detect` on a decoded RGB frame, timed
by its three stages: pre_ms (letterbox and normalise, `frame_input`), the model
(`run_input`) and post_ms (decoding and NMS, `decode`). All exclude file decoding (JPEG/PNG).
"""
from __future__ import annotations

import errno
import gc
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from featherface.records import ParityRecord
from featherface.verify.golden import content_rgb

from .device import describe_device, peak_rss_mb
from .parity import device_parity
from .records import SCHEMA, BaselineRatio, BenchReport, BenchResult, BenchSettings, Frame, LoadBreakdown, Samples, Timing
from .stats import interleaved_schedule, paired_ratio, summarize, throughput
from .targets import Golden, Opened, Target, open_target

FRAME_LONG_SIDE = 1280  # a 720p-class camera frame: pre-processing really resizes
MEMORY_PROBE_RUNS = 5
PROBE_CANNOT_START = "memory probe could not start"
Progress = Callable[[str], None]


# ---------------------------------------------------------------- the frame detect runs on


def golden_frame(golden: Golden, mean_bgr, long_side: int = FRAME_LONG_SIDE) -> np.ndarray:
    """Golden image 0 back as HxWx3 uint8 RGB: padding cropped, longer side `long_side`.

    The golden input is BGR minus mean with exact zeros in the letterbox padding (bottom
    and right); the content is where any channel is non-zero.
    """
    rgb = content_rgb(golden.inputs[0], mean_bgr)
    height, width = rgb.shape[:2]
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def synthetic_frame(width: int = FRAME_LONG_SIDE, height: int = 720) -> np.ndarray:
    """A deterministic noise frame, when no bundle has golden vectors (no faces: the
    post-processing then costs less than on a real photo)."""
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def choose_frame(targets: list[Target], image_rgb: np.ndarray | None, image_name: str | None) -> tuple[np.ndarray, Frame]:
    """The one frame every target detects on (the same pixels for all: a fair comparison)."""
    if image_rgb is not None:
        frame, source = image_rgb, f"--image {image_name}"
    else:
        with_golden = next((t for t in targets if t.golden is not None), None)
        if with_golden is None:
            frame, source = synthetic_frame(), "synthetic noise (no golden vectors in the bundles)"
        else:
            frame = golden_frame(with_golden.golden, with_golden.manifest.input.mean)
            source = f"golden image 0 of {with_golden.bundle.name} ({with_golden.golden.names[0]}), resized"
    return frame, Frame(source, int(frame.shape[1]), int(frame.shape[0]))


# ---------------------------------------------------------------- timing


@dataclass
class Measured:
    opened: Opened
    first_run_ms: float
    model: list[float]
    total: list[float]
    pre: list[float]  # of the same detect runs as `total`
    post: list[float]
    faces: int
    parity: ParityRecord


def _prepared(opened: Opened, frame: np.ndarray) -> np.ndarray:
    tensor, _ = opened.detector.frame_input(frame)
    return tensor.copy()  # frame_input's buffer is rewritten by every detect


def run_group(
    targets: list[Target], threads: int | None, frame: np.ndarray, warmup: int, runs: int, progress: Progress,
) -> list[Measured]:
    """All `targets` at `threads`, interleaved: warm-up rounds, then `runs` timed rounds; a
    round is one model run of each target in turn, then one detect of each in turn
    (stats.interleaved_schedule). Garbage collection is paused while timing (as `timeit`
    does) so that a collection lands on no single file."""
    opened: list[tuple[Opened, np.ndarray, float]] = []
    try:
        for target in targets:
            progress(f"loading {target.label}" + (f" ({threads} threads)" if threads and not target.is_coreml else ""))
            item = open_target(target, None if target.is_coreml else threads)
            prepared = _prepared(item, frame)
            start = time.perf_counter()
            item.detector.runtime.run(prepared)
            opened.append((item, prepared, 1000 * (time.perf_counter() - start)))
        schedule = interleaved_schedule(len(opened), warmup, runs)
        model: list[list[float]] = [[] for _ in opened]
        total: list[list[float]] = [[] for _ in opened]
        pre: list[list[float]] = [[] for _ in opened]
        post: list[list[float]] = [[] for _ in opened]
        faces = [0] * len(opened)
        progress(f"timing {len(opened)} file(s): {warmup} warm-up + {runs} timed rounds, interleaved")
        collecting = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            for step in schedule:
                item, prepared, _ = opened[step.target]
                if step.kind == "model":
                    start = time.perf_counter()
                    item.detector.runtime.run(prepared)
                    elapsed = time.perf_counter() - start
                else:  # Detector.detect, stage by stage
                    found, seconds = item.detector.detect_timed(frame)
                    elapsed = seconds.total
                    faces[step.target] = len(found)
                    if step.timed:
                        pre[step.target].append(1000 * seconds.pre)
                        post[step.target].append(1000 * seconds.post)
                if step.timed:
                    (model if step.kind == "model" else total)[step.target].append(1000 * elapsed)
        finally:
            if collecting:
                gc.enable()
        measured = []
        for i, (item, _, first) in enumerate(opened):
            progress(f"parity of {item.target.label} on {len(item.target.golden.inputs) if item.target.golden else 0} golden images")
            parity = device_parity(item.detector, item.target.golden, item.target.entry)
            measured.append(Measured(item, first, model[i], total[i], pre[i], post[i], faces[i], parity))
        return measured
    finally:
        for item, _, _ in opened:
            item.detector.close()
        gc.collect()


# ---------------------------------------------------------------- memory


def probe_memory(target: Target, threads: int | None, frame_path: Path) -> tuple[float | None, str]:
    """Peak RSS of a fresh process that loads only this file and detects a few times:
    (MiB, "isolated"), or (None, why) when the probe cannot run here."""
    command = [
        sys.executable, "-m", "featherface.bench.memprobe", str(target.bundle), target.file,
        "--image", str(frame_path), "--runs", str(MEMORY_PROBE_RUNS),
    ]
    if threads:
        command += ["--threads", str(threads)]
    if target.compute_units:
        command += ["--compute-units", target.compute_units]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except OSError as err:
        why = f"{err.strerror or err}: {command[0]}"
        if err.errno == errno.ENOEXEC:  # e.g. qemu-aarch64 user-mode emulation without binfmt_misc
            why += "; this machine cannot start a child process of this Python (user-mode emulation?)"
        return None, f"{PROBE_CANNOT_START} ({why})"
    except subprocess.SubprocessError as err:
        return None, f"memory probe failed: {err}"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return None, f"memory probe failed: {lines[-1] if lines else 'exit ' + str(result.returncode)}"
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"], "isolated"
    except (ValueError, KeyError, IndexError):
        return None, "memory probe printed no figure"


# ---------------------------------------------------------------- the whole run


def result_of(m: Measured, baseline: Measured | None, peak_rss: float | None, memory_scope: str) -> BenchResult:
    """The record of one measured file; its memory comes from `measure_memory`."""
    target, opened = m.opened.target, m.opened
    size = target.manifest.input.size
    model, total, pre, post = (Timing(**summarize(runs)) for runs in (m.model, m.total, m.pre, m.post))
    ratio = None
    if baseline is not None:
        ratio = BaselineRatio(baseline.opened.target.label, paired_ratio(m.model, baseline.model), paired_ratio(m.total, baseline.total))
    return BenchResult(
        label=target.label, bundle=str(target.bundle), file=target.file, arch=target.manifest.arch, target=target.manifest.target,
        format=target.entry.format, precision=target.entry.precision, runtime=target.runtime_name,
        compute_units=target.compute_units, input_size=str(size) if not size.is_square else size.height,
        input_width=size.width, input_height=size.height, size_bytes=target.entry.size_bytes,
        threads=opened.threads, load_ms=opened.load_ms, load_breakdown=LoadBreakdown(opened.verify_ms, opened.open_ms),
        first_run_ms=m.first_run_ms, model_ms=model, total_ms=total, pre_ms=pre, post_ms=post,
        pre_post_share=(pre.p50 + post.p50) / total.p50 if total.p50 else None,
        throughput=throughput(total.mean), model_throughput=throughput(model.mean),
        peak_rss_mb=peak_rss, memory_scope=memory_scope, faces=m.faces, parity=m.parity, ratio_to_baseline=ratio,
        samples_ms=Samples(*([round(v, 4) for v in runs] for runs in (m.model, m.total, m.pre, m.post))),
    )


def measure_memory(measured: list[Measured], frame: np.ndarray, notes: list[str], progress: Progress) -> list[tuple[float | None, str]]:
    """(peak RSS MiB, memory_scope) of each measured file, from a separate process per file
    (`probe_memory`); the bench's own process stands in, with a note, where a probe cannot run."""
    figures = []
    with tempfile.TemporaryDirectory(prefix="featherface-bench-") as scratch:
        frame_path = Path(scratch) / "frame.png"
        Image.fromarray(frame).save(frame_path)
        cannot_start = False  # a probe that cannot start for one file cannot for any: said once
        for m in measured:
            target, threads = m.opened.target, m.opened.threads
            value, scope = None, PROBE_CANNOT_START
            if not cannot_start:
                progress(f"peak memory of {target.label} at {threads or 'default'} threads (separate process)")
                value, scope = probe_memory(target, threads if not target.is_coreml else None, frame_path)
                cannot_start = scope.startswith(PROBE_CANNOT_START)
                if cannot_start:
                    notes.append(f"{scope}; peak_rss_mb of every file is this whole process's")
                elif value is None:
                    notes.append(f"{target.label}: {scope}; peak_rss_mb is this whole process's")
            figures.append((peak_rss_mb(), "process") if value is None else (value, scope))
    return figures


def run_bench(
    targets: list[Target], threads: list[int], runs: int, warmup: int, baseline: Target,
    frame: np.ndarray, frame_info: Frame, notes: list[str], progress: Progress,
) -> BenchReport:
    """The report of a whole run (keys: device_bench/README.md)."""
    started = time.perf_counter()
    measured: list[tuple[Measured, Measured | None]] = []  # each file and its group's baseline
    if any(t.is_coreml for t in targets):
        notes.append("Core ML files ran once per compute unit (threads do not apply), in the first thread group")
    for index, count in enumerate(threads):
        group = [t for t in targets if not t.is_coreml or index == 0]
        if not group:  # only Core ML files, already run in the first group
            continue
        progress(f"thread group {count}: {len(group)} file(s)")
        group_measured = run_group(group, count, frame, warmup, runs, progress)
        base = next((m for m in group_measured if m.opened.target is baseline), None)
        measured += [(m, base) for m in group_measured]
    memory = measure_memory([m for m, _ in measured], frame, notes, progress)
    results = [result_of(m, base, *figures) for (m, base), figures in zip(measured, memory)]
    failed = [r.where for r in results if not r.passed]
    settings = BenchSettings(
        runs=runs, warmup=warmup, threads=threads,
        schedule="interleaved: each round runs the model of every file in argument order, then the whole detect of every file",
        baseline=baseline.label, ratio="median over rounds of (file / baseline), same thread count", frame=frame_info,
        gc_paused_while_timing=True,
    )
    return BenchReport(
        schema=SCHEMA, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), device=describe_device(),
        settings=settings, results=results, parity="fail" if failed else "pass", parity_failures=failed,
        process_peak_rss_mb=peak_rss_mb(), wall_seconds=round(time.perf_counter() - started, 1), notes=notes,
    )
