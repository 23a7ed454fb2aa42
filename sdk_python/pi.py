"""`featherface-pi`: live face detection on a Raspberry Pi (or any machine with the SDK).

Sources: the Pi camera (picamera2), a USB camera or a video file (OpenCV), or a folder of
images. Prints FPS and per-stage latency every second, what remains of the last second at
the end (so a run shorter than a second still shows them) and the average over the run;
stops cleanly on Ctrl-C and at the end of a file. Runs the bundle's preferred file (or
--file) on --threads threads, with the runtime the file needs (LiteRT with XNNPACK for pi4).
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

from featherface.arg_types import int_at_least, output_folder, score_threshold, thread_count
from featherface.cli_help import add_examples
from featherface.errors import run_reporting

from .annotate import annotate, save_annotated
from .detect_command import Skipped, annotated_name, face_json, refuse_output_among_inputs
from .detector import Detector, DetectorOptions, StageSeconds
from .image_io import ImageError, load_image
from .sources import Frame, SourceError, expand_inputs, video_frames


def picamera_frames(size: tuple[int, int]) -> Iterator[Frame]:
    from picamera2 import Picamera2  # only on Raspberry Pi OS

    try:
        camera = Picamera2()
    except Exception as err:  # no camera attached or enabled: picamera2 raises IndexError, RuntimeError
        raise SourceError(f"--source camera: the Pi camera could not be opened ({type(err).__name__}: {err})") from None
    # "RGB888" in picamera2 is BGR in memory (libcamera naming): flip to RGB.
    camera.configure(camera.create_preview_configuration(main={"format": "RGB888", "size": size}))
    camera.start()
    try:
        index = 0
        while True:
            rgb = np.ascontiguousarray(camera.capture_array()[:, :, ::-1])
            yield Frame(f"picamera#frame={index}", rgb=rgb, timestamp_ms=1000 * time.monotonic())
            index += 1
    finally:
        camera.stop()


def usb_camera_frames(index: int, source: str, tried: str = "") -> Iterator[Frame]:
    """Frames of USB camera `index`; a camera that cannot be opened is one error naming
    `source`, the value the user gave, and what was `tried` before it."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its warnings about /dev/videoN would bury our line
    except ImportError:
        raise SourceError(f"--source {source}: {tried}USB cameras need OpenCV: pip install opencv-python-headless") from None
    try:
        yield from video_frames(index, source)
    except SourceError:
        raise SourceError(f"--source {source}: {tried}no USB camera at index {index} could be opened; "
                          "pass --source usb:N, a video file or a folder of images") from None


def _broken_picamera2(err: Exception) -> SourceError:
    """picamera2 is there but cannot import (a missing libcamera, apt's simplejpeg built for
    numpy 1 under a venv's numpy 2): say so, rather than fall back to a USB camera."""
    hint = (" (apt's simplejpeg was built for numpy 1: pip install --force-reinstall simplejpeg in this venv)"
            if "numpy" in str(err) else "")
    return SourceError(f"--source camera: picamera2 is installed but fails to import ({type(err).__name__}: {err}){hint}")


def open_source(source: str, camera_size: tuple[int, int]) -> Iterator[Frame]:
    """'camera' (Pi camera, else USB camera 0), 'usb:N', a video file, or an image folder."""
    if source == "camera":
        try:
            import picamera2  # noqa: F401

            return picamera_frames(camera_size)
        except ImportError as err:
            if err.name == "picamera2":
                return usb_camera_frames(0, source, tried="no Pi camera (picamera2 is not installed) and ")
            raise _broken_picamera2(err) from None
        except Exception as err:  # installed but broken, e.g. apt's simplejpeg under a venv's numpy 2
            raise _broken_picamera2(err) from None
    if source.startswith("usb:"):
        if not source[4:].isdigit():
            raise SourceError(f"--source {source}: expected usb:N, N a camera index such as 0")
        return usb_camera_frames(int(source[4:]), source)
    return expand_inputs([source])


@dataclass
class Span:
    """Frames and summed per-stage seconds since `start` (perf_counter seconds)."""

    start: float = field(default_factory=time.perf_counter)
    frames: int = 0
    seconds: StageSeconds = StageSeconds(0.0, 0.0, 0.0)

    def add(self, seconds: StageSeconds) -> None:
        self.frames += 1
        total = self.seconds
        self.seconds = StageSeconds(total.pre + seconds.pre, total.model + seconds.model, total.post + seconds.post)

    def line(self, now: float) -> str:
        """'fps F | pre P ms | model M ms | post Q ms': frames per wall-clock second (loading
        and saving included) and the mean milliseconds of each stage per frame."""
        pre, model, post = (1000 * seconds / self.frames for seconds in (self.seconds.pre, self.seconds.model, self.seconds.post))
        return (f"fps {self.frames / max(now - self.start, 1e-9):5.1f} | pre {pre:6.1f} ms | "
                f"model {model:6.1f} ms | post {post:5.1f} ms")


@dataclass
class Stats:
    """The current one-second window, printed when it is over, and the whole run."""

    window: Span = field(default_factory=Span)
    run: Span | None = None

    def begin(self) -> None:
        """Start the clocks at the first frame (not at model load)."""
        if self.run is None:
            self.run = Span()
            self.window = Span(start=self.run.start)

    def add(self, seconds: StageSeconds) -> None:
        self.window.add(seconds)
        self.run.add(seconds)

    def report_if_due(self) -> None:
        now = time.perf_counter()
        if self.window.frames and now - self.window.start >= 1.0:
            print(self.window.line(now), file=sys.stderr, flush=True)
            self.window = Span(start=now)

    def finish(self) -> None:
        """The rest of the last window (a run shorter than a second has only that), then the
        average over the whole run."""
        now = time.perf_counter()
        if self.window.frames:
            print(self.window.line(now), file=sys.stderr, flush=True)
        if self.run is not None and self.run.frames:
            print(f"average over {self.run.frames} frames in {now - self.run.start:.1f} s: {self.run.line(now)}",
                  file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.save and args.source != "camera" and not args.source.startswith("usb:"):
        refuse_output_among_inputs([args.source], args.save, "--save")
    if args.show:
        _open_window()
    detector = Detector.load(args.bundle, DetectorOptions(score_threshold=args.score, num_threads=args.threads), file=args.file)
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
    saved_names: set[str] = set()
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    previous_handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stats, frames, skipped = Stats(), 0, Skipped("featherface-pi")
    try:
        for frame in open_source(args.source, (args.camera_width, args.camera_height)):
            if stopping or (args.max_frames and frames >= args.max_frames):
                break
            stats.begin()
            try:
                rgb = load_image(frame.path if frame.path is not None else frame.rgb)
            except ImageError as err:
                skipped.add(err)
                continue
            faces, seconds = detector.detect_timed(rgb)  # one input buffer for the whole stream
            stats.add(seconds)
            frames += 1
            if args.json:
                timestamp = {} if frame.timestamp_ms is None else {"timestamp_ms": round(frame.timestamp_ms, 3)}
                print(json.dumps({"image": frame.name, **timestamp, "faces": [face_json(f) for f in faces]}), flush=True)
            if args.save:
                save_annotated(rgb, faces, Path(args.save) / annotated_name(frame.name, saved_names))
            if args.show:
                _show(rgb, faces)
            stats.report_if_due()
    finally:  # main() may be called in-process (tests, a caller's script): give Ctrl-C back
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    stats.finish()
    return skipped.finish(f"featherface-pi: {frames} frames, {len(skipped.failures)} skipped", frames)


WINDOW = "featherface"


def _open_window() -> None:
    """Fail before the first frame, in one line, where `--show` cannot work: no OpenCV, the
    headless wheel of the `[video]` extra (no GUI), or no display."""
    try:
        import cv2
    except ImportError:
        raise RuntimeError("--show needs OpenCV with a GUI: pip install opencv-python") from None
    try:
        cv2.namedWindow(WINDOW)
    except cv2.error:
        raise RuntimeError(
            "--show needs opencv-python (not opencv-python-headless) and a display; use --save instead"
        ) from None


def _show(rgb: np.ndarray, faces) -> None:
    import cv2

    cv2.imshow(WINDOW, np.asarray(annotate(rgb, faces))[:, :, ::-1])
    cv2.waitKey(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featherface-pi", description=__doc__.split("\n\n")[0])
    add_examples(parser, "featherface-pi")
    parser.add_argument("--bundle", required=True, help="bundle directory (e.g. dist/pi4)")
    parser.add_argument("--source", default="camera", help="'camera', 'usb:N', a video file or an image folder (default: camera)")
    parser.add_argument("--threads", type=thread_count, default=4, help="inference threads, >= 1 (default 4: the Pi 4's cores)")
    parser.add_argument("--file", help="model file of the bundle (default: its preferred one)")
    parser.add_argument("--score", type=score_threshold, default=None, help="score threshold in [0, 1] (default: the bundle's)")
    parser.add_argument("--save", type=output_folder, help="write annotated frames into this folder (created if absent)")
    parser.add_argument("--show", action="store_true", help="show annotated frames in a window (needs OpenCV and a display)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame on stdout")
    parser.add_argument("--max-frames", type=int_at_least(0), default=0, help="stop after this many frames (0: no limit)")
    parser.add_argument("--camera-width", type=int_at_least(16, 8192), default=640, help="Pi camera frame width (default %(default)s)")
    parser.add_argument("--camera-height", type=int_at_least(16, 8192), default=480, help="Pi camera frame height (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting("featherface-pi", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
