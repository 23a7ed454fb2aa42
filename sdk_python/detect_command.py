"""`featherface detect`: run a bundle over images, folders or videos; print JSON lines,
write annotated images, summarise on stderr. A bad file is reported and skipped."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .annotate import save_annotated
from .detector import Detector, DetectorOptions
from .faces import Face
from .image_io import ImageError, load_image
from .sources import SourceError, expand_inputs


def face_json(face: Face) -> dict:
    """A face for JSON output: pixels to 0.01, score to 1e-4."""
    return {
        "box": [round(v, 2) for v in face.box],
        "score": round(face.score, 4),
        "landmarks": [[round(x, 2), round(y, 2)] for x, y in face.landmarks],
    }


@dataclass
class Skipped:
    """The inputs a run skipped: each said when it happens, all listed again at the end."""

    prog: str
    failures: list[str] = field(default_factory=list)

    def add(self, err: Exception) -> None:
        self.failures.append(str(err))
        print(f"{self.prog}: skipped: {err}", file=sys.stderr)

    def finish(self, summary: str, done: int) -> int:
        """Print `summary` and the skipped inputs; exit status 1 if any (or nothing was done)."""
        print(summary, file=sys.stderr)
        for failure in self.failures:
            print(f"  failed: {failure}", file=sys.stderr)
        return 1 if self.failures or not done else 0


def annotated_name(frame_name: str, used: set[str]) -> str:
    """`frame_name`'s annotated copy, a .jpg name not in `used` (which it joins); a video
    frame ("clip.mp4#frame=12") gets its index in the name."""
    path, _, index = frame_name.rpartition("#frame=")
    stem = f"{Path(path).stem}_frame{int(index):06d}" if path and index.isdigit() else Path(frame_name).stem
    name, k = f"{stem}.jpg", 2
    while name in used:
        name, k = f"{stem}_{k}.jpg", k + 1
    used.add(name)
    return name


def refuse_output_among_inputs(inputs: list[str], out_dir: str, flag: str = "--out") -> None:
    """ValueError when annotated copies in `out_dir` could overwrite an input or be read back
    as one: an input `NAME.jpg` sits in `out_dir`, or `out_dir` is (inside) an input folder,
    which is read recursively."""
    out = Path(out_dir).resolve()
    for text in inputs:
        path = Path(text).resolve()
        if path.is_dir() and (path == out or path in out.parents):
            raise ValueError(f"{flag} {out_dir} is inside the input folder {text}: annotated copies would overwrite "
                             "or join its images; choose a folder outside it")
        if path.is_file() and out / annotated_name(str(path), set()) == path:
            raise ValueError(f"{flag} {out_dir} holds the input {text}, which its annotated copy would overwrite; "
                             "choose another folder")


def run_detect(
    bundle: str, inputs: list[str], *, as_json: bool = False, out_dir: str | None = None,
    score: float | None = None, file: str | None = None, runtime: str | None = None, threads: int | None = None,
) -> int:
    if out_dir:
        refuse_output_among_inputs(inputs, out_dir)
    detector = Detector.load(bundle, DetectorOptions(score_threshold=score, num_threads=threads), runtime=runtime, file=file)
    skipped = Skipped("featherface")
    images = faces_total = 0
    used_names: set[str] = set()
    start = time.perf_counter()
    for text in inputs:
        try:
            for frame in expand_inputs([text]):
                try:
                    rgb = load_image(frame.path if frame.path is not None else frame.rgb)
                except ImageError as err:
                    skipped.add(err)
                    continue
                faces = detector.detect(rgb)
                images += 1
                faces_total += len(faces)
                if as_json:
                    print(json.dumps({"image": frame.name, "faces": [face_json(f) for f in faces]}), flush=True)
                if out_dir:
                    save_annotated(rgb, faces, Path(out_dir) / annotated_name(frame.name, used_names))
        except SourceError as err:
            skipped.add(err)
    elapsed = time.perf_counter() - start
    per_image = f", {1000 * elapsed / images:.1f} ms per image" if images else ""
    summary = f"{images} images, {faces_total} faces, {len(skipped.failures)} failed ({detector.model_file}{per_image})"
    return skipped.finish(summary, images)
