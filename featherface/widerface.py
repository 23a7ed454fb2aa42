"""Official WIDER FACE validation protocol (Easy/Medium/Hard AP), a vectorised NumPy port
of the widely used Python evaluator (Pytorch_Retinaface ``widerface_evaluate/evaluation.py``)."""
from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SETTINGS: tuple[str, str, str] = ("easy", "medium", "hard")
CURVE_POINTS = 100  # points per precision-recall curve kept for reports; plots need no more
Key = tuple[str, str]  # (event, image name without extension)


@dataclass(frozen=True)
class WiderAP:
    """Easy / Medium / Hard AP (fractions, NaN for a setting without faces) over `images`
    validation images holding `faces[setting]` faces that count.

    `curves[setting]` is the precision envelope for plots (`pr_envelope`); `protocol` how
    the images reached the detector ("letterboxed 640", "original size"), `seconds` the
    evaluation's wall time, `events` the same score per WIDER event and `against` the
    difference from a baseline's predictions on the same images, where the caller measured
    them (None or empty otherwise).
    """

    easy: float
    medium: float
    hard: float
    images: int
    faces: Mapping[str, int]
    curves: Mapping[str, Mapping[str, list[float]]] = field(default_factory=dict)
    protocol: str = ""
    seconds: float | None = None
    events: Mapping[str, "WiderAP"] | None = None  # None: not scored by event
    against: APDifference | None = None  # None: not compared with a baseline

    def by_setting(self) -> dict[str, float]:
        return {s: getattr(self, s) for s in SETTINGS}

    def headline(self) -> dict:
        """AP and the image count, as the quantization records keep them (no curves)."""
        return {**self.by_setting(), "images": self.images}

    def percent(self) -> str:
        """"89.3 / 83.6 / 51.5": easy / medium / hard in percent, as the docs print AP."""
        return " / ".join(f"{100 * ap:.1f}" for ap in self.by_setting().values())

    def to_json(self) -> dict:
        """The JSON shape `featherface eval --json`, manifests and caches have always used."""
        data: dict = {**self.headline(), "faces": dict(self.faces)}
        if self.curves:
            data["curves"] = {s: dict(curve) for s, curve in self.curves.items()}
        if self.events is not None:
            data["events"] = {event: ap.to_json() for event, ap in self.events.items()}
        if self.against is not None:
            data["against"] = self.against.to_json()
        if self.seconds is not None:
            data["seconds"] = self.seconds
        if self.protocol:
            data["protocol"] = self.protocol
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> "WiderAP":
        events, against = data.get("events"), data.get("against")
        return cls(
            **{s: float(data[s]) for s in SETTINGS}, images=int(data["images"]), faces=dict(data["faces"]),
            curves=dict(data.get("curves", {})), protocol=data.get("protocol", ""), seconds=data.get("seconds"),
            events=None if events is None else {event: cls.from_json(ap) for event, ap in events.items()},
            against=None if against is None else APDifference.from_json(against),
        )


@dataclass(frozen=True)
class APDifference:
    """AP of one prediction set minus a baseline's on the same images (fractions, per
    setting), with the `confidence` interval of a paired bootstrap over those images: how
    much of a difference could come from which photos happen to be in a small subset."""

    difference: Mapping[str, float]
    low: Mapping[str, float]
    high: Mapping[str, float]
    images: int
    samples: int
    confidence: float

    def to_json(self) -> dict:
        return {s: {"difference": self.difference[s], "low": self.low[s], "high": self.high[s]} for s in SETTINGS} | {
            "images": self.images, "samples": self.samples, "confidence": self.confidence}

    @classmethod
    def from_json(cls, data: Mapping) -> APDifference:
        return cls(*({s: float(data[s][bound]) for s in SETTINGS} for bound in ("difference", "low", "high")),
                   images=int(data["images"]), samples=int(data["samples"]), confidence=float(data["confidence"]))

    def percent(self) -> str:
        """"easy -2.2 [-3.7, -1.0], ...": points, as the docs print a difference."""
        return ", ".join(f"{s} {100 * self.difference[s]:+.1f} [{100 * self.low[s]:+.1f}, {100 * self.high[s]:+.1f}]"
                         for s in SETTINGS)


@dataclass(frozen=True)
class GTImage:
    """One validation image: faces as xywh pixels and, per setting, the faces that count.

    ``keep[setting]`` holds 0-based indices into ``boxes``; every other face is
    "ignored" for that setting (a detection on it is neither a hit nor a false positive).
    """

    event: str
    name: str
    boxes: np.ndarray  # [K, 4] x, y, w, h (float64)
    keep: Mapping[str, np.ndarray]  # setting -> int64 indices into boxes

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        keep = {s: np.asarray(self.keep.get(s, ()), dtype=np.int64).reshape(-1) for s in SETTINGS}
        for s, idx in keep.items():
            if idx.size and (idx.min() < 0 or idx.max() >= len(boxes)):
                raise ValueError(f"{self.event}/{self.name}: {s} keep index out of range")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "keep", keep)


@dataclass(frozen=True)
class GroundTruth:
    """All ground-truth images, keyed by (event, name) in the official file order."""

    images: Mapping[Key, GTImage]

    @classmethod
    def from_images(cls, images: Iterable[GTImage]) -> GroundTruth:
        return cls({(im.event, im.name): im for im in images})

    @property
    def events(self) -> list[str]:
        return list(dict.fromkeys(event for event, _ in self.images))

    def __len__(self) -> int:
        return len(self.images)


def _cells(mat_field: np.ndarray) -> list[np.ndarray]:
    """MATLAB cell array (N x 1 object array) -> list of its contents."""
    return [cell[0] for cell in mat_field]


def _mat_cells(path: Path, *keys: str) -> list:
    """The cell arrays `keys` of an official .mat file; any failure names the file."""
    from scipy.io import loadmat  # scipy only needed when reading the official files

    try:
        data = loadmat(path)
        return [_cells(data[key]) for key in keys]
    except Exception as err:  # scipy's MatReadError, a ValueError, a missing key: all mean a damaged file
        raise ValueError(f"{path}: not an official WIDER FACE ground-truth file ({type(err).__name__}: {err})") from None


def load_ground_truth(gt_dir: Path) -> GroundTruth:
    """Read the official ``wider_{face,easy,medium,hard}_val.mat`` files.

    The easy/medium/hard ``gt_list`` cells are 1-based MATLAB indices; they are stored
    0-based here.
    """
    gt_dir = Path(gt_dir)
    missing = [n for n in ("face", *SETTINGS) if not (gt_dir / f"wider_{n}_val.mat").is_file()]
    if missing:
        raise FileNotFoundError(f"{gt_dir}: missing WIDER FACE ground truth " + ", ".join(f"wider_{n}_val.mat" for n in missing))
    events, file_lists, box_lists = _mat_cells(gt_dir / "wider_face_val.mat", "event_list", "file_list", "face_bbx_list")
    keep_lists = {s: _mat_cells(gt_dir / f"wider_{s}_val.mat", "gt_list")[0] for s in SETTINGS}
    images = []
    for i, (event, files, boxes) in enumerate(zip(events, file_lists, box_lists)):
        for j in range(len(files)):
            keep = {s: keep_lists[s][i][j][0].astype(np.int64).reshape(-1) - 1 for s in SETTINGS}
            images.append(GTImage(str(event[0]), str(files[j][0][0]), boxes[j][0], keep))
    return GroundTruth.from_images(images)


# --------------------------------------------------------------------------- prediction files


def write_predictions(
    pred_dir: Path, event: str, name: str, boxes_xyxy_pixels: np.ndarray, scores: np.ndarray
) -> Path:
    """Write ``<pred_dir>/<event>/<name>.txt`` in the standard WIDER layout, atomically.

    Lines: image name, face count, then ``x y w h score`` per face, highest score first
    (the evaluators assume that order). Boxes follow the original RetinaFace
    ``test_widerface.py`` exactly: ``x = int(x1); y = int(y1); w = int(x2) - int(x1);
    h = int(y2) - int(y1)`` -- each corner truncated toward zero, no ``+ 1`` -- so that our
    files score like the published ones (the evaluator's ``+ 1`` areas then apply).
    """
    boxes = np.asarray(boxes_xyxy_pixels, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"{event}/{name}: a box or score is not a finite number (NaN or infinite); AP would be wrong")
    order = np.argsort(-scores, kind="stable")
    ints = np.trunc(boxes[order]).astype(np.int64)  # Python int(): truncation toward zero
    lines = [name, str(len(ints))]
    for (x1, y1, x2, y2), s in zip(ints.tolist(), scores[order].tolist()):
        lines.append(f"{x1} {y1} {x2 - x1} {y2 - y1} {s!r}")
    out = Path(pred_dir) / event / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, out)  # a reader never sees a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def read_prediction_file(path: Path) -> tuple[str, np.ndarray]:
    """One prediction file -> (image name, [K, 5] x, y, w, h, score)."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected an image name and a face count")
    name = lines[0].strip().split("/")[-1].removesuffix(".jpg")
    try:
        count = int(lines[1])
        rows = np.asarray([[float(v) for v in line.split()[:5]] for line in lines[2:] if line.strip()], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: not a WIDER prediction file ({err})") from None
    if len(rows) != count:
        raise ValueError(f"{path}: header says {count} faces, file holds {len(rows)}")
    rows = rows.reshape(0, 5) if len(rows) == 0 else rows
    if rows.shape[1:] != (5,):
        raise ValueError(f"{path}: every face line must hold x y w h score")
    if not np.isfinite(rows).all():
        raise ValueError(f"{path}: a box or score is not a finite number (NaN or infinite)")
    return name, rows


def read_predictions(pred_dir: Path) -> dict[Key, np.ndarray]:
    """Read every ``<event>/<name>.txt`` under ``pred_dir`` -> {(event, name): [K, 5]}."""
    preds: dict[Key, np.ndarray] = {}
    for path in sorted(Path(pred_dir).glob("*/*.txt")):
        name, boxes = read_prediction_file(path)
        preds[(path.parent.name, name)] = boxes
    return preds


# --------------------------------------------------------------------------- evaluation


def bbox_overlaps(boxes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """IoU [N, K] of x1y1x2y2 boxes with the inclusive-pixel ``+ 1`` convention of the
    official (Fast R-CNN) ``bbox_overlaps``; pairs that do not intersect get 0."""
    b, q = boxes[:, None, :], query[None, :, :]
    iw = np.minimum(b[..., 2], q[..., 2]) - np.maximum(b[..., 0], q[..., 0]) + 1
    ih = np.minimum(b[..., 3], q[..., 3]) - np.maximum(b[..., 1], q[..., 1]) + 1
    area_b = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    area_q = (query[:, 2] - query[:, 0] + 1) * (query[:, 3] - query[:, 1] + 1)
    hit = (iw > 0) & (ih > 0)
    inter = iw * ih
    union = area_b[:, None] + area_q[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=hit)


def norm_scores(predictions: Mapping[Key, np.ndarray]) -> dict[Key, np.ndarray]:
    """Min-max normalise scores over all given images, as the official ``norm_score``.

    Like the official code the range starts as min 1, max 0 (so scores in [0, 1] map to
    [0, 1] by their true min and max). Returns copies. When every score is equal the
    official code divides by zero (NaN scores, AP 0); here they all become 1 instead.
    """
    preds = {k: np.asarray(v, dtype=np.float64).reshape(-1, 5).copy() for k, v in predictions.items()}
    all_scores = np.concatenate([v[:, 4] for v in preds.values()] + [np.empty(0)])
    lo = min(1.0, float(all_scores.min())) if all_scores.size else 1.0
    hi = max(0.0, float(all_scores.max())) if all_scores.size else 0.0
    for v in preds.values():
        v[:, 4] = (v[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
    return preds


def image_eval(
    pred: np.ndarray, gt: np.ndarray, keep: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted predictions [N, 5] xywh+s to faces [K, 4] xywh.

    Each prediction takes its highest-IoU face (kept or not, matched before or not).
    Returns per prediction the running count of distinct kept faces found so far
    (``pred_recall``) and ``proposal`` = 1, or -1 when it hit an ignored face (so it
    is not counted as a false positive).
    """
    p = pred[:, :4].copy()
    g = gt.copy()
    p[:, 2:] += p[:, :2]  # xywh -> x1y1x2y2 as the official code: x2 = x + w
    g[:, 2:] += g[:, :2]
    overlaps = bbox_overlaps(p, g)
    best = overlaps.argmax(axis=1)
    matched = overlaps[np.arange(len(p)), best] >= iou_threshold
    is_kept = np.zeros(len(g), dtype=bool)
    is_kept[keep] = True
    proposal = np.where(matched & ~is_kept[best], -1.0, 1.0)
    hits = np.flatnonzero(matched & is_kept[best])
    first_hit = np.zeros(len(p))
    first_hit[hits[np.unique(best[hits], return_index=True)[1]]] = 1  # first hit per face
    return np.cumsum(first_hit), proposal


def img_pr_info(
    thresh_num: int, scores: np.ndarray, proposal: np.ndarray, pred_recall: np.ndarray
) -> np.ndarray:
    """[thresh_num, 2] (proposals counted, faces recalled) at thresholds 1 - (t+1)/n.

    ``scores`` must be sorted descending, as the official code assumes.
    """
    thresholds = 1 - (np.arange(thresh_num) + 1) / thresh_num
    n_above = len(scores) - np.searchsorted(scores[::-1], thresholds, side="left")
    cum_prop = np.concatenate(([0.0], np.cumsum(proposal == 1)))
    cum_recall = np.concatenate(([0.0], pred_recall))
    return np.stack([cum_prop[n_above], cum_recall[n_above]], axis=1)


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """Area under the PR curve after taking the precision envelope (VOC style)."""
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def pr_envelope(rec: np.ndarray, prec: np.ndarray, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """The precision envelope that ``voc_ap`` integrates, as at most ``points`` (recall,
    precision) pairs for plotting. ``rec`` ascends (thresholds descend); points are spread
    evenly over recall, not thresholds, because most faces are found within a few
    thresholds near 1. Thresholds with no proposal (precision 0/0) count as precision 0."""
    envelope = np.maximum.accumulate(np.nan_to_num(prec, nan=0.0)[::-1])[::-1]
    targets = np.linspace(rec[0], rec[-1], points)
    keep = np.unique(np.append(np.searchsorted(rec, targets, side="left"), len(rec) - 1))
    return {"recall": np.round(rec[keep], 5).tolist(), "precision": np.round(envelope[keep], 5).tolist()}


def evaluate(
    predictions: Mapping[Key, np.ndarray],
    gt: GroundTruth,
    iou_threshold: float = 0.5,
    thresh_num: int = 1000,
) -> WiderAP:
    """Easy/Medium/Hard AP over exactly the images in ``predictions``.

    ``predictions[(event, name)]`` is [K, 5] x, y, w, h, score (K may be 0). Ground-truth
    images without an entry are skipped entirely (our validation set is a subset); an
    entry with no boxes still counts its faces as missed. As in the official code, an
    image without ground-truth faces contributes nothing, not even false positives.
    The curves are ``pr_envelope``'s, with empty lists for a setting without faces.
    """
    curves, faces = np.zeros((len(SETTINGS), thresh_num, 2)), np.zeros(len(SETTINGS), dtype=np.int64)
    images = 0
    for _, image_curves, image_faces in _image_counts(predictions, gt, iou_threshold, thresh_num):
        curves += image_curves
        faces += image_faces
        images += 1
    ap = _ap_of_counts(curves, faces)
    pr_curves = {}
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 at empty thresholds, as official
        for i, s in enumerate(SETTINGS):
            found, proposed = curves[i, :, 1], curves[i, :, 0]
            pr_curves[s] = pr_envelope(found / faces[i], found / proposed) if faces[i] else {"recall": [], "precision": []}
    return WiderAP(**{s: float(v) for s, v in zip(SETTINGS, ap)}, images=images, faces=dict(zip(SETTINGS, faces.tolist())), curves=pr_curves)


def _image_counts(
    predictions: Mapping[Key, np.ndarray], gt: GroundTruth, iou_threshold: float, thresh_num: int
) -> Iterator[tuple[Key, np.ndarray, np.ndarray]]:
    """Per predicted image, in ground-truth order: its key, its [settings, thresh_num, 2]
    (proposals, faces recalled) counts and its [settings] faces that count. AP is a function
    of their sums, which is what lets `paired_ap_difference` resample images."""
    unknown = sorted(set(predictions) - set(gt.images))
    if unknown:
        shown = ", ".join(f"{e}/{n}" for e, n in unknown[:5])
        raise ValueError(f"{len(unknown)} predicted images are not in the ground truth: {shown}")
    preds = norm_scores(predictions)
    for key, image in gt.images.items():
        if key not in preds:
            continue
        pred = preds[key]
        pred = pred[np.argsort(-pred[:, 4], kind="stable")]
        counts = np.zeros((len(SETTINGS), thresh_num, 2), np.float32)  # integer counts: exact, half the memory
        for i, s in enumerate(SETTINGS):
            if len(image.boxes) and len(pred):
                recall, proposal = image_eval(pred, image.boxes, image.keep[s], iou_threshold)
                counts[i] = img_pr_info(thresh_num, pred[:, 4], proposal, recall)
        yield key, counts, np.array([len(image.keep[s]) for s in SETTINGS])


def _ap_of_counts(curves: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[settings] AP of summed [settings, thresh_num, 2] counts (NaN where no face counts)."""
    ap = np.full(len(SETTINGS), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 at empty thresholds, as official
        for i in np.flatnonzero(faces):
            found, proposed = curves[i, :, 1], curves[i, :, 0]
            ap[i] = voc_ap(found / faces[i], found / proposed)
    return ap


def paired_ap_difference(
    predictions: Mapping[Key, np.ndarray], baseline: Mapping[Key, np.ndarray], gt: GroundTruth, *,
    samples: int = 1000, confidence: float = 0.95, seed: int = 0, iou_threshold: float = 0.5, thresh_num: int = 1000,
) -> APDifference:
    """`evaluate(predictions) - evaluate(baseline)` per setting, and its interval from
    `samples` resamplings of the images with replacement, the same images for both sets
    (paired: a photo that is hard for one is hard for the other, so the interval of the
    difference is far narrower than either AP's own). Scores stay normalised over the whole
    set, as `evaluate` does. Both sets must cover the same images."""
    if set(predictions) != set(baseline):
        only = sorted(set(predictions) ^ set(baseline))
        raise ValueError(f"the two prediction sets cover different images ({len(only)} in one only, e.g. "
                         f"{only[0][0]}/{only[0][1]}): a paired comparison needs the same images")
    if not predictions:
        raise ValueError("no images to compare")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"samples must be >= 1 and confidence in (0, 1), got {samples} and {confidence}")
    sets = []
    for preds in (predictions, baseline):
        per_image = list(_image_counts(preds, gt, iou_threshold, thresh_num))
        sets.append((np.stack([c for _, c, _ in per_image]), np.stack([f for _, _, f in per_image])))
    (curves_a, faces), (curves_b, _) = sets
    point = (_ap_of_counts(curves_a.sum(0, dtype=np.float64), faces.sum(0))
             - _ap_of_counts(curves_b.sum(0, dtype=np.float64), faces.sum(0)))
    rng, images = np.random.default_rng(seed), len(faces)
    resampled = np.empty((samples, len(SETTINGS)))
    for k in range(samples):
        weights = np.bincount(rng.integers(0, images, images), minlength=images).astype(np.float64)
        sampled_faces = weights @ faces
        resampled[k] = (_ap_of_counts(np.tensordot(weights, curves_a, 1), sampled_faces)
                        - _ap_of_counts(np.tensordot(weights, curves_b, 1), sampled_faces))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a setting without faces in every sample: NaN
        tail = 100 * (1 - confidence) / 2
        low, high = np.nanpercentile(resampled, [tail, 100 - tail], axis=0)
    point, low, high = ({s: float(v) for s, v in zip(SETTINGS, values)} for values in (point, low, high))
    return APDifference(point, low, high, images, samples, confidence)
