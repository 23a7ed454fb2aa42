"""`python -m featherface.bench.soak BUNDLE [--frames 10000]`: detect over many frames and
check that resident memory does not grow, as a long camera run would expose a leak.

RSS is sampled after loading, after the warm-up frames, every `--every` frames and at the
end. Exit status: 0 the RSS peak of the run's second half (after warm-up) is within
`--tolerance-mb` of the first half's, 1 it grew beyond, 2 bad input (one error line).
A benchmark to run by hand, not a timed test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from featherface.arg_types import thread_count
from featherface.errors import run_reporting

if TYPE_CHECKING:
    from featherface.sdk.detector import Detector
    from featherface.sdk.image_io import ImageSource

PROG = "python -m featherface.bench.soak"
# Camera-like frame sizes (landscape, portrait, small): each takes its own letterbox path.
SYNTHETIC_SIZES = ((1280, 720), (480, 640), (320, 240))


def synthetic_frames() -> list[np.ndarray]:
    """Deterministic RGB noise frames of SYNTHETIC_SIZES (width, height)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for width, height in SYNTHETIC_SIZES]


def rss_growth_mb(samples: list[tuple[int, float]], warmup: int) -> float:
    """Peak RSS over the second half of the samples taken after `warmup` frames minus the
    peak over the first half, in MiB.

    A leak raises every later peak. Allocator noise does not: large decoded frames, freed
    and then kept or returned to the OS, move RSS up and down within one band, which a plain
    end-minus-start difference would mistake for growth. `samples` are (frames done, RSS
    MiB) in order, at least two of them at or after `warmup`.
    """
    after = [rss for frames, rss in samples if frames >= warmup]
    half = len(after) // 2
    return round(max(after[half:]) - max(after[:half]), 1)


def run_soak(
    detector: Detector, frames: Sequence[ImageSource], count: int, warmup: int, every: int, rss_mb: Callable[[], float]
) -> dict:
    """Detect on `count` frames cycling through `frames` (arrays or image paths, decoded
    each time); RSS sampled by `rss_mb()` at 0 frames, after `warmup`, every `every`, at the end."""
    samples = [(0, rss_mb())]
    faces = 0
    started = time.perf_counter()
    for done in range(1, count + 1):
        faces += len(detector.detect(frames[(done - 1) % len(frames)]))
        if done == warmup or done % every == 0 or done == count:
            samples.append((done, rss_mb()))
    seconds = time.perf_counter() - started
    return {"frames": count, "seconds": round(seconds, 2), "fps": round(count / seconds, 1) if seconds else None,
            "faces": faces, "warmup": warmup, "rss_mb": samples}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle directory (has manifest.json)")
    parser.add_argument("--frames", type=int, default=10_000, help="frames to detect on (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=200, help="frames before the baseline RSS sample (default %(default)s)")
    parser.add_argument("--every", type=int, default=500, help="sample RSS every N frames (default %(default)s)")
    parser.add_argument("--tolerance-mb", type=float, default=8.0, help="allowed growth of the RSS peak (default %(default)s MiB)")
    parser.add_argument("--image", action="append", help="photo to cycle through, decoded every frame (repeatable; default: synthetic frames)")
    parser.add_argument("--file", help="model file of the bundle (default: its preferred one)")
    parser.add_argument("--threads", type=thread_count, default=None, help="inference threads")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.frames or args.every < 1:
        parser.error(f"need 0 <= --warmup < --frames and --every >= 1, got {args.warmup}, {args.frames}, {args.every}")

    return run_reporting(PROG, lambda: _soak(args))


def _soak(args: argparse.Namespace) -> int:
    from featherface.sdk.detector import Detector
    from featherface.sdk.image_io import load_image

    from .device import current_rss_mb

    if current_rss_mb() is None:
        raise RuntimeError("cannot read this process's resident memory here (install psutil)")
    detector = Detector.load(args.bundle, num_threads=args.threads, file=args.file)
    for path in args.image or []:
        load_image(path)  # a bad photo fails now, in one line, not mid-run
    result = run_soak(detector, args.image or synthetic_frames(), args.frames, args.warmup, args.every, current_rss_mb)
    growth = rss_growth_mb(result["rss_mb"], args.warmup)
    result.update(bundle=args.bundle, file=detector.model_file, growth_mb=growth, tolerance_mb=args.tolerance_mb,
                  ok=growth <= args.tolerance_mb)
    if args.json:
        print(json.dumps(result))
    else:
        for frames, rss in result["rss_mb"]:
            print(f"frame {frames:>7}: rss {rss:8.1f} MiB")
        (_, start), (_, end) = result["rss_mb"][0], result["rss_mb"][-1]
        print(f"{result['frames']} frames in {result['seconds']} s ({result['fps']} fps, {result['file']}); "
              f"rss start {start:.1f} MiB, end {end:.1f} MiB; peak growth after {args.warmup} warm-up frames "
              f"{growth:+.1f} MiB, tolerance {args.tolerance_mb} MiB: " + ("ok" if result["ok"] else "GROWS"))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
