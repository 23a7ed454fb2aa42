"""`python -m featherface.bench.memprobe BUNDLE FILE --image PNG`: peak resident memory of
a process that loads one model file and detects a few times, printed as one JSON line.

The bench runs it once per file and thread count, so that each file's peak_rss_mb is its
own (in the bench's process, every file of an interleaved run is loaded at once).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featherface.bench.memprobe")
    parser.add_argument("bundle")
    parser.add_argument("file")
    parser.add_argument("--image", required=True, help="RGB frame to detect on (PNG)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compute-units", default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    from featherface.sdk.bundle import read_manifest, verified_file
    from featherface.sdk.image_io import load_image

    from .device import current_rss_mb, peak_rss_mb
    from .targets import Target, open_target

    try:
        frame = load_image(args.image)
        before = current_rss_mb()
        manifest = read_manifest(args.bundle)
        _, entry = verified_file(args.bundle, manifest, args.file)
        opened = open_target(Target(Path(args.bundle), manifest, args.file, entry, None, args.compute_units), args.threads)
        loaded = current_rss_mb()
        for _ in range(max(1, args.runs)):
            opened.detector.detect(frame)
    except Exception as err:  # reported by the parent as a note, never a traceback
        print(f"memprobe: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "rss_before_load_mb": before, "rss_after_load_mb": loaded}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
