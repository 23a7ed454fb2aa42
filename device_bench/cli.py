"""`featherface bench` / `python -m featherface.bench`: latency, memory and parity of bundles
on the device at hand.

    python -m featherface.bench BUNDLE_OR_FILE... [--threads 1,2,4] [--runs 100] [--warmup 10]
                                [--baseline NAME] [--json] [--out DIR] [--image PHOTO]

Needs numpy, pillow and one runtime only. Exit status: 0 all files pass parity, 1 some file
fails parity (the report is still printed and written), 2 bad input (one error line).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from featherface.arg_types import int_at_least, output_folder
from featherface.config import MAX_THREADS
from featherface.errors import run_reporting

DEFAULT_THREADS = (1, 2, 4)
PROG = "featherface bench"


def thread_counts(text: str) -> list[int]:
    """argparse type: "1,2,4" -> [1, 2, 4] (positive, de-duplicated, ascending)."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"thread counts must be integers from 1 to {MAX_THREADS}, got {text!r}")
    return counts


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The bench's arguments on `parser` (a subcommand's parser or a standalone one)."""
    parser.add_argument(
        "inputs", nargs="+", metavar="BUNDLE_OR_FILE",
        help="a bundle directory (all the model files a runtime here can run; .mlpackage only on macOS) "
        "or one model file inside a bundle (BUNDLE/model_fp16.tflite)",
    )
    parser.add_argument(
        "--threads", type=thread_counts, default=None,
        help="comma-separated thread counts (default 1,2,4; counts above this device's cores are skipped)",
    )
    parser.add_argument("--runs", type=int_at_least(1), default=100, help="timed runs per file and thread count (default 100)")
    parser.add_argument("--warmup", type=int_at_least(0), default=10, help="untimed warm-up runs first (default 10)")
    parser.add_argument(
        "--baseline", metavar="NAME",
        help="print ratios to this file: a label such as pi4/model_fp32.tflite, a file name, a bundle "
        "directory name, an arch or a target (default: the first file)",
    )
    parser.add_argument("--pick", action="store_true",
                        help="make the fastest file that passed parity (first thread count) each bundle's preferred file; "
                        "the manifest records the device and time")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout (progress goes to stderr)")
    parser.add_argument("--out", metavar="DIR", type=output_folder, help="write bench.json, bench.md and bench.png (with matplotlib) there")
    parser.add_argument(
        "--image", metavar="PHOTO",
        help="photo for total_ms (default: the first bundle's golden image 0, resized to a 1280-pixel long side)",
    )
    return parser


def effective_threads(requested: list[int] | None, notes: list[str]) -> list[int]:
    """The requested counts this device can honour (at least one: its core count)."""
    from .device import usable_cores

    cores = usable_cores()
    counts = list(requested or DEFAULT_THREADS)
    kept = [c for c in counts if c <= cores]
    dropped = [c for c in counts if c > cores]
    if dropped:
        notes.append(f"skipped {', '.join(map(str, dropped))} threads: this device has {cores} usable cores")
    return kept or [cores]


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the bench as `args` (from add_bench_arguments) say; the exit status, and bad input
    in one line naming `featherface bench` (`featherface` and `python -m` alike)."""
    return run_reporting(PROG, lambda: _bench(args))


def _bench(args: argparse.Namespace) -> int:
    from featherface.sdk.bundle import is_bundle
    from featherface.sdk.image_io import load_image

    from .pick import pick
    from .report import summary_text, write_reports
    from .runner import choose_frame, run_bench
    from .targets import pick_baseline, resolve_targets

    if args.pick and not all(is_bundle(i) for i in args.inputs):
        raise ValueError("--pick compares every file of a bundle: pass bundle directories, not single model files")
    notes: list[str] = []
    targets = resolve_targets(list(args.inputs), notes)
    baseline = pick_baseline(targets, args.baseline)
    threads = effective_threads(args.threads, notes)
    image = load_image(args.image) if args.image else None
    frame, frame_info = choose_frame(targets, image, args.image)
    report = run_bench(targets, threads, args.runs, args.warmup, baseline, frame, frame_info, notes, _progress)
    written = write_reports(report, Path(args.out)) if args.out else []
    picked = pick(report) if args.pick else []
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(summary_text(report))
    for path in written:
        _progress(f"wrote {path}")
    for line in picked:
        _progress(line)
    return 1 if report.parity == "fail" else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m featherface.bench",
        description="Latency (model alone and whole detect), peak memory, load time and on-device parity "
        "of bundles' model files, interleaved across files so that comparisons survive a noisy machine.",
    )
    add_bench_arguments(parser)
    return run(parser.parse_args(argv))
