"""`featherface-pi`: live face detection on a Raspberry Pi (or any machine with the SDK).

Sources: the Pi camera (picamera2), a USB camera or a video file (OpenCV), or a folder of
images. Prints FPS and per-stage latency every second; stops cleanly on Ctrl-C and at the
end of a file. Runs the bundle with LiteRT (XNNPACK) on --threads threads.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from featherface.arg_types import output_folder, score_threshold, thread_count

from .annotate import annotate
from .detect_command import Skipped, face_json
from .detector import Detector
from .image_io import ImageError, load_image
from .sources import Frame, SourceError, expand_inputs, video_frames


def picamera_frames(size: tuple[int, int]) -> Iterator[Frame]:
    from picamera2 import Picamera2  # only on Raspberry Pi OS

    camera = Picamera2()
    # "RGB888" in picamera2 is BGR in memory (libcamera naming): flip to RGB.
    camera.configure(camera.create_preview_configuration(main={"format": "RGB888", "size": size}))
    camera.start()
    try:
        index = 0
        while True:
            yield Frame(f"picamera#frame={index}", rgb=np.ascontiguousarray(camera.capture_array()[:, :, ::-1]))
            index += 1
    finally:
        camera.stop()


def open_source(source: str, camera_size: tuple[int, int]) -> Iterator[Frame]:
    """'camera' (Pi camera, else USB camera 0), 'usb:N', a video file, or an image folder."""
    if source == "camera":
        try:
            import picamera2  # noqa: F401

            return picamera_frames(camera_size)
        except ImportError:
            return video_frames(0, "usb:0")
    if source.startswith("usb:"):
        return video_frames(int(source[4:]), source)
    return expand_inputs([source])


@dataclass
class Stats:
    """Per-stage latency over the current one-second window."""

    window_start: float = field(default_factory=time.perf_counter)
    frames: int = 0
    stage_ms: dict[str, float] = field(default_factory=lambda: {"pre": 0.0, "infer": 0.0, "post": 0.0})

    def add(self, pre: float, infer: float, post: float) -> None:
        self.frames += 1
        for key, seconds in (("pre", pre), ("infer", infer), ("post", post)):
            self.stage_ms[key] += 1000 * seconds

    def report_if_due(self, stream=sys.stderr) -> None:
        elapsed = time.perf_counter() - self.window_start
        if elapsed < 1.0 or not self.frames:
            return
        means = {k: v / self.frames for k, v in self.stage_ms.items()}
        print(f"fps {self.frames / elapsed:5.1f} | pre {means['pre']:6.1f} ms | infer {means['infer']:6.1f} ms | "
              f"post {means['post']:5.1f} ms", file=stream, flush=True)
        self.__init__()


def run(args: argparse.Namespace) -> int:
    detector = Detector.load(args.bundle, num_threads=args.threads, file=args.file)
    thresholds = detector.thresholds(score=args.score)
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    stats, frames, skipped = Stats(), 0, Skipped("featherface-pi")
    try:
        for frame in open_source(args.source, (args.camera_width, args.camera_height)):
            if stopping or (args.max_frames and frames >= args.max_frames):
                break
            try:
                rgb = load_image(frame.path if frame.path is not None else frame.rgb)
            except ImageError as err:
                skipped.add(err)
                continue
            t0 = time.perf_counter()
            batch, letterbox = detector.prepare(rgb)
            t1 = time.perf_counter()
            outputs = detector.infer(batch)
            t2 = time.perf_counter()
            faces = detector.decode(outputs, 0, letterbox, thresholds)
            t3 = time.perf_counter()
            stats.add(t1 - t0, t2 - t1, t3 - t2)
            frames += 1
            if args.json:
                print(json.dumps({"image": frame.name, "faces": [face_json(f) for f in faces]}), flush=True)
            if args.save:
                annotate(rgb, faces).save(Path(args.save) / f"frame_{frames:06d}.jpg")
            if args.show:
                _show(rgb, faces)
            stats.report_if_due()
    except SourceError as err:
        print(f"featherface-pi: error: {err}", file=sys.stderr)
        return 2
    return skipped.finish(f"featherface-pi: {frames} frames, {len(skipped.failures)} skipped", frames)


def _show(rgb: np.ndarray, faces) -> None:
    import cv2

    cv2.imshow("featherface", np.asarray(annotate(rgb, faces))[:, :, ::-1])
    cv2.waitKey(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="featherface-pi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle directory (e.g. dist/pi4)")
    parser.add_argument("--source", default="camera", help="'camera', 'usb:N', a video file or an image folder (default: camera)")
    parser.add_argument("--threads", type=thread_count, default=4, help="LiteRT threads, >= 1 (default 4: the Pi 4's cores)")
    parser.add_argument("--file", help="model file of the bundle (default: its preferred one)")
    parser.add_argument("--score", type=score_threshold, default=None, help="score threshold in [0, 1] (default: the bundle's)")
    parser.add_argument("--save", type=output_folder, help="write annotated frames into this folder (created if absent)")
    parser.add_argument("--show", action="store_true", help="show annotated frames in a window (needs OpenCV and a display)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame on stdout")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: no limit)")
    parser.add_argument("--camera-width", type=int, default=640)
    parser.add_argument("--camera-height", type=int, default=480)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"featherface-pi: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
