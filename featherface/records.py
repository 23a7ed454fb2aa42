"""The bundle's records as types: `Manifest` and its `FileEntry`s, each file's `ParityRecord`
(its `OutputError`s and `DetectionAgreement`), `QuantizationRecord` (its `LayerError`s and
`SearchStepRecord`s) and `ManifestAP`, and `PreferredBy`. One validating `from_json` and one
`to_json` each; the converters write them, the SDK, the report and the bench read them.

A bundle is untrusted input on a device. Refused (`ManifestError`, naming the field and
what was expected): an unknown format version, a missing, unknown or mistyped field (nested
ones too: the rule tables below say what is read), and a files[] entry whose output map
names other outputs than the manifest's. The report reads with `strict=False`: fields newer
than this code are kept, not refused, so a report can show them.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import Any, Callable

from featherface.config import CHANNEL_ORDER, MANIFEST_VERSION, MAX_INPUT_SIDE, OUTPUT_NAMES, InputSize, PriorConfig, Thresholds
from featherface.widerface import SETTINGS

SUPPORTED_VERSIONS = (MANIFEST_VERSION,)


class ManifestError(ValueError):
    """A manifest (or one of its records) that cannot be trusted or used."""


def _is(*types: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, types) and (bool in types or not isinstance(v, bool))


def _list_of(check: Callable[[Any], bool], length: int | None = None, empty: bool = True) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, list) and (empty or bool(v)) and length in (None, len(v)) and all(map(check, v)))


# Per object: key -> (check, what is expected, for the message). Every key is required and
# no other is allowed, except where a table is marked open below.
Rules = dict[str, tuple[Callable[[Any], bool], str]]
STRING = (_is(str), "a string")
INTEGER = (_is(int), "an integer")
NUMBER = (_is(int, float), "a number")
OBJECT = (_is(dict), "an object")
NULL_OR_OBJECT = (lambda v: v is None or isinstance(v, dict), "null or an object")
SHA256 = (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits")
MANIFEST_RULES: Rules = {
    "format_version": INTEGER, "target": STRING, "arch": STRING,
    "checkpoint": NULL_OR_OBJECT,
    "input": OBJECT, "priors": OBJECT, "thresholds": OBJECT, "tools": OBJECT,
    "outputs": (_list_of(_is(dict), empty=False), "a non-empty list of objects"),
    "files": (_list_of(_is(dict), empty=False), "a non-empty list of objects"),
    "preferred_file": STRING,
    "golden": NULL_OR_OBJECT,  # the bench checks inside (verify.golden)
}
MANIFEST_FIELDS = set(MANIFEST_RULES)
OPTIONAL_RULES: Rules = {
    "reference_accuracy": OBJECT,  # WIDER FACE AP of PyTorch, when the build measured it
    "preferred_by": OBJECT,  # who chose preferred_file (`featherface build` or `bench --pick`), where, when
}


def _in(low: float, high: float, low_open: bool = False) -> Callable[[Any], bool]:
    """A finite int or float in [low, high] ((low, high] when `low_open`)."""
    return lambda v: _is(int, float)(v) and math.isfinite(v) and (low < v if low_open else low <= v) and v <= high


_PIXELS = (lambda v: _is(int)(v) and 0 < v <= MAX_INPUT_SIDE, f"an integer from 1 to {MAX_INPUT_SIDE}")
_POSITIVE_INTS = _list_of(lambda v: _is(int)(v) and v > 0, empty=False)
# Values the SDK does not read but fixes by convention (config.MEAN_BGR's BGR order, pixels
# unscaled): a manifest claiming another would be run wrongly, so it is refused.
INPUT_RULES: Rules = {
    "name": STRING, "height": _PIXELS, "width": _PIXELS, "layout": STRING, "dtype": STRING,
    "channel_order": (lambda v: v == CHANNEL_ORDER, f"{CHANNEL_ORDER!r} (the order the SDK feeds)"),
    "mean": (_list_of(_in(-1e4, 1e4), 3), "3 finite numbers"),
    "scale": (lambda v: _is(int, float)(v) and v == 1, "1 (the SDK feeds mean-subtracted pixels unscaled)"), "resize": STRING,
}
PRIORS_RULES: Rules = {
    "min_sizes": (_list_of(_POSITIVE_INTS, empty=False), "a list of lists of positive integers"),
    "steps": (_POSITIVE_INTS, "a list of positive integers"),
    "variances": (_list_of(_in(0, 10, low_open=True), 2), "2 positive numbers"),
    "clip": (_is(bool), "true or false"),
}
THRESHOLDS_RULES: Rules = {
    "score": (_in(0, 1), "a number in [0, 1]"), "nms_iou": (_in(0, 1), "a number in [0, 1]"),
    "top_k": (lambda v: _is(int)(v) and v >= 0, "an integer >= 0 (0: all)"),
}
CHECKPOINT_RULES: Rules = {"name": STRING, "sha256": SHA256}
OUTPUT_RULES: Rules = {"name": STRING, "shape": (_list_of(_is(int), empty=False), "a list of integers")}
# Open: an entry may hold records this code does not read (kept as they are).
FILE_ENTRY_RULES: Rules = {
    "file": STRING, "sha256": SHA256,
    "output_map": (lambda v: isinstance(v, dict) and all(isinstance(t, str) for t in v.values()), "an object of tensor names"),
}
FILE_ENTRY_OPTIONAL_RULES: Rules = {
    "format": STRING, "precision": STRING, "size_bytes": INTEGER, "input": OBJECT,
    "parity": OBJECT, "quantization": OBJECT, "accuracy": OBJECT,
}
PARITY_RULES: Rules = {
    "status": (lambda v: v in ("pass", "fail"), '"pass" or "fail"'),
    "reasons": (_list_of(_is(str)), "a list of strings"),
    "thresholds": OBJECT, "tensor": OBJECT, "detections": OBJECT,
}
PARITY_OPTIONAL_RULES: Rules = {
    "error_bounds": OBJECT, "torch_fp32_vs_fp64": OBJECT, "images": (_list_of(_is(str)), "a list of strings"),
    "conversion_seconds": NUMBER,
}
NUMBER_OR_NULL = (lambda v: v is None or _is(int, float)(v), "a number or null")
# An error is null where the bench wrote a non-finite one (JSON has no Infinity).
OUTPUT_ERROR_RULES: Rules = {"max_abs_error": NUMBER_OR_NULL, "mean_abs_error": NUMBER_OR_NULL, "cosine": NUMBER, "finite": (_is(bool), "true or false")}
DETECTION_AGREEMENT_RULES: Rules = {
    "reference_faces": INTEGER, "candidate_faces": INTEGER, "matched": INTEGER, "recall": NUMBER, "precision": NUMBER,
    "robust_recall": NUMBER, "robust_precision": NUMBER, "mean_iou": NUMBER, "landmark_error": NUMBER,
}
MANIFEST_AP_RULES: Rules = {  # every key optional: a file's AP may be "not measured", with a reason
    "status": (lambda v: v in ("measured", "not measured"), '"measured" or "not measured"'), "protocol": STRING,
    "easy": NUMBER_OR_NULL, "medium": NUMBER_OR_NULL, "hard": NUMBER_OR_NULL, "images": INTEGER,
    "curves": OBJECT, "delta_vs_torch": OBJECT, "reason": STRING,
}
QUANTIZATION_RULES: Rules = {"tool": STRING}
_STRINGS = (_list_of(_is(str)), "a list of strings")
# Open: what else a tool reports (calibration, ranges, budget, ...) is kept in `details`.
QUANTIZATION_OPTIONAL_RULES: Rules = {
    "kept_float": _STRINGS,
    "always_float": (lambda v: isinstance(v, dict) and all(_is(int)(n) for n in v.values()), "an object of group -> op count"),
    "sensitivity": (_list_of(_is(dict)), "a list of objects"), "search": (_list_of(_is(dict)), "a list of objects"),
}
LAYER_ERROR_RULES: Rules = {"op_index": INTEGER, "op": STRING, "tensor": STRING, "nmse": NUMBER, "added_nmse": NUMBER}
_BY_SETTING = (lambda v: isinstance(v, dict) and all(_is(int, float)(v.get(s)) for s in SETTINGS),
               "an object with numbers for easy, medium and hard")
SEARCH_STEP_RULES: Rules = {"kept_float": _STRINGS, "accuracy": _BY_SETTING, "losses": _BY_SETTING,
                            "holds": (_is(bool), "true or false")}
SEARCH_STEP_ACCURACY_OPTIONAL_RULES: Rules = {"images": INTEGER, "size_bytes": INTEGER}
_MS_BY_FILE = (lambda v: isinstance(v, dict) and all(_is(int, float)(ms) for ms in v.values()), "an object of file -> ms")
# A bench --pick of before 2026-12-06 wrote the chosen file's figures as plain numbers.
_MS_BY_FILE_OR_NUMBER = (lambda v: _MS_BY_FILE[0](v) or _is(int, float)(v), "an object of file -> ms")
PREFERRED_BY_RULES: Rules = {
    "by": STRING, "device": STRING, "when": STRING,
    "threads": (lambda v: v is None or _is(int)(v), "null or an integer"),
    "model_p50_ms": _MS_BY_FILE_OR_NUMBER,
}
PREFERRED_BY_OPTIONAL_RULES: Rules = {"detect_p50_ms": _MS_BY_FILE_OR_NUMBER}


def check_fields(source: str, where: str, value: dict, rules: Rules, optional: Rules | None = None, closed: bool = True) -> None:
    """Refuse `value` (the object at `where` in `source`) unless it has every key of `rules`,
    each value as expected, and (if `closed`) no key outside `rules` and `optional`."""
    optional = optional or {}

    def name(key: str) -> str:
        return f"{where}.{key}" if where else key

    def fail(message: str) -> ManifestError:
        return ManifestError(f"{source}: {message}" if source else message)

    unknown = sorted(set(value) - set(rules) - set(optional)) if closed else []
    if unknown:
        raise fail(f"unknown fields {[name(k) for k in unknown]}; refusing a manifest this SDK does not understand")
    missing = sorted(set(rules) - set(value))
    if missing:
        raise fail(f"missing fields {[name(k) for k in missing]}")
    for key, (check, expected) in {**rules, **optional}.items():
        if key in value and not check(value[key]):
            raise fail(f"`{name(key)}` must be {expected}, not {json.dumps(value[key])[:60]}")


@dataclass(frozen=True)
class OutputError:
    """One output of a file against PyTorch's, over all images (verify.parity.tensor_errors)."""

    max_abs_error: float  # inf where the file's output is not finite
    mean_abs_error: float
    cosine: float
    finite: bool

    @classmethod
    def from_json(cls, data: Any, where: str, source: str = "") -> "OutputError":
        check_fields(source, where, _object(data, where, source), OUTPUT_ERROR_RULES, closed=False)
        inf = float("inf")
        return cls(_or(data["max_abs_error"], inf), _or(data["mean_abs_error"], inf), data["cosine"], data["finite"])

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DetectionAgreement:
    """A file's faces against PyTorch's over images (verify.parity.detection_agreement): plain
    figures above the score threshold, robust ones (the verdict's) across its margin."""

    reference_faces: int
    candidate_faces: int
    matched: int
    recall: float
    precision: float
    robust_recall: float
    robust_precision: float
    mean_iou: float
    landmark_error: float  # mean landmark distance over the face's size, matched faces

    @classmethod
    def from_json(cls, data: Any, where: str, source: str = "") -> "DetectionAgreement":
        check_fields(source, where, _object(data, where, source), DETECTION_AGREEMENT_RULES, closed=False)
        return cls(**{key: data[key] for key in DETECTION_AGREEMENT_RULES})

    def to_json(self) -> dict:
        return asdict(self)


def _object(data: Any, where: str, source: str) -> dict:
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: `{where}` must be an object" if source else f"`{where}` must be an object")
    return data


def _or(value: float | None, missing: float) -> float:
    return missing if value is None else value


@dataclass
class ParityRecord:
    """A file against PyTorch FP32 on real images (featherface.verify.check.judge)."""

    status: str  # "pass" | "fail"
    reasons: list[str]  # every failed bar, named with its figure
    thresholds: dict = field(default_factory=dict)  # the precision's ParityThresholds
    tensor: dict[str, OutputError] = field(default_factory=dict)  # by output name
    detections: DetectionAgreement | None = None  # None: the file produced no outputs to compare
    error_bounds: dict = field(default_factory=dict)  # output -> max abs error allowed (None: not checked)
    torch_fp32_vs_fp64: dict = field(default_factory=dict)  # output -> PyTorch FP32's own error
    images: list[str] = field(default_factory=list)
    conversion_seconds: float | None = None
    extra: dict = field(default_factory=dict)  # fields this code does not read, kept as they are

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def max_abs_error(self) -> float | None:
        """The largest over every output (None when no output was compared)."""
        return max((e.max_abs_error for e in self.tensor.values()), default=None)

    @classmethod
    def from_json(cls, data: Any, where: str = "parity", source: str = "") -> "ParityRecord":
        check_fields(source, where, _object(data, where, source), PARITY_RULES, PARITY_OPTIONAL_RULES, closed=False)
        known = set(PARITY_RULES) | set(PARITY_OPTIONAL_RULES)
        values = {k: v for k, v in data.items() if k in known}
        values["tensor"] = {name: OutputError.from_json(e, f"{where}.tensor.{name}", source) for name, e in data["tensor"].items()}
        detections = data["detections"]
        values["detections"] = DetectionAgreement.from_json(detections, f"{where}.detections", source) if detections else None
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        record = {"status": self.status, "reasons": list(self.reasons), "thresholds": self.thresholds,
                  "error_bounds": self.error_bounds, "torch_fp32_vs_fp64": self.torch_fp32_vs_fp64,
                  "tensor": {name: e.to_json() for name, e in self.tensor.items()},
                  "detections": self.detections.to_json() if self.detections else {}, "images": list(self.images)}
        if self.conversion_seconds is not None:
            record["conversion_seconds"] = self.conversion_seconds
        return {**record, **self.extra}


@dataclass(frozen=True)
class ManifestAP:
    """WIDER FACE AP as a manifest holds it: PyTorch FP32's (`reference_accuracy`, no status)
    or a file's (`accuracy`), fractions 0-1 per setting; a file not measured says why."""

    status: str | None = None  # a file's: "measured" | "not measured"
    protocol: str | None = None  # e.g. "letterboxed 640"
    easy: float | None = None
    medium: float | None = None
    hard: float | None = None
    images: int | None = None
    curves: dict = field(default_factory=dict)  # setting -> {"recall": [...], "precision": [...]}
    delta_vs_torch: dict | None = None  # a file's AP minus PyTorch's, in points, as the build rounded it
    reason: str | None = None  # why a file's AP was not measured
    extra: dict = field(default_factory=dict)  # fields this code does not read, kept as they are

    def ap(self) -> dict[str, float | None]:
        return {s: getattr(self, s) for s in SETTINGS}

    def delta_points(self, reference: "ManifestAP | None") -> dict[str, float | None]:
        """Per setting, this AP minus `reference`'s in points: the build's rounded figures where
        it wrote them, else computed (None where either side was not measured)."""
        stored = self.delta_vs_torch or {}
        computed = {s: None if reference is None or None in (getattr(self, s), getattr(reference, s))
                    else 100 * (getattr(self, s) - getattr(reference, s)) for s in SETTINGS}
        return {s: stored[s] if stored.get(s) is not None else computed[s] for s in SETTINGS}

    @classmethod
    def from_json(cls, data: Any, where: str, source: str = "") -> "ManifestAP":
        check_fields(source, where, _object(data, where, source), {}, MANIFEST_AP_RULES, closed=False)
        return cls(**{k: v for k, v in data.items() if k in MANIFEST_AP_RULES}, extra={k: v for k, v in data.items() if k not in MANIFEST_AP_RULES})

    def to_json(self) -> dict:
        record = {k: getattr(self, k) for k in MANIFEST_AP_RULES if k != "curves" and getattr(self, k) is not None}
        if self.curves:
            record["curves"] = self.curves
        order = list(MANIFEST_AP_RULES)
        return {**dict(sorted(record.items(), key=lambda item: order.index(item[0]))), **self.extra}


@dataclass(frozen=True)
class LayerError:
    """One op of a full-INT8 file against its float file on the calibration images
    (quantization.sensitivity): what the budget search ranks the float groups by."""

    op_index: int
    op: str
    tensor: str
    nmse: float  # mean squared error / mean power of the float and INT8 tensors
    added_nmse: float  # nmse minus the worst nmse of its inputs: this op's own share
    extra: dict = field(default_factory=dict)  # fields this code does not read, kept as they are

    @classmethod
    def from_json(cls, data: Any, where: str, source: str = "") -> "LayerError":
        check_fields(source, where, _object(data, where, source), LAYER_ERROR_RULES, closed=False)
        return cls(**{key: data[key] for key in LAYER_ERROR_RULES}, extra={k: v for k, v in data.items() if k not in LAYER_ERROR_RULES})

    def to_json(self) -> dict:
        return {**{key: getattr(self, key) for key in LAYER_ERROR_RULES}, **self.extra}


@dataclass(frozen=True)
class SearchStepRecord:
    """One file the INT8 budget search measured: the groups it kept float, its AP (fractions)
    and size, and the points it lost against PyTorch FP32. In the manifest the AP, image
    count and size sit together under `accuracy`."""

    kept_float: list[str]
    ap: dict[str, float]  # by setting
    losses: dict[str, float]  # by setting, in points
    holds: bool
    images: int | None = None
    size_bytes: int | None = None
    extra: dict = field(default_factory=dict)  # fields this code does not read, kept as they are

    @classmethod
    def from_json(cls, data: Any, where: str, source: str = "") -> "SearchStepRecord":
        check_fields(source, where, _object(data, where, source), SEARCH_STEP_RULES, closed=False)
        accuracy = data["accuracy"]
        check_fields(source, f"{where}.accuracy", accuracy, {}, SEARCH_STEP_ACCURACY_OPTIONAL_RULES, closed=False)
        known = set(SETTINGS) | set(SEARCH_STEP_ACCURACY_OPTIONAL_RULES)
        extra = {k: v for k, v in data.items() if k not in SEARCH_STEP_RULES}
        if any(k not in known for k in accuracy):
            extra["accuracy"] = {k: v for k, v in accuracy.items() if k not in known}
        return cls(list(data["kept_float"]), {s: accuracy[s] for s in SETTINGS}, {s: data["losses"][s] for s in SETTINGS},
                   data["holds"], accuracy.get("images"), accuracy.get("size_bytes"), extra)

    def to_json(self) -> dict:
        extra = dict(self.extra)
        sizes = {k: v for k, v in (("images", self.images), ("size_bytes", self.size_bytes)) if v is not None}
        accuracy = {**self.ap, **sizes, **extra.pop("accuracy", {})}
        return {"kept_float": list(self.kept_float), "accuracy": accuracy, "losses": self.losses, "holds": self.holds, **extra}


@dataclass
class QuantizationRecord:
    """How a quantized file was made: the tool, what it kept in float and why, and the rest
    of what it did and measured as it reported it (`details`: calibration, ranges, budget,
    float_groups, comparison_files, ...), which the report shows as it is."""

    tool: str
    _: KW_ONLY
    kept_float: list[str] = field(default_factory=list)  # the budget search's groups, or what the tool keeps float
    always_float: dict[str, int] = field(default_factory=dict)  # group -> ops float by design (a DCN's sampling)
    sensitivity: list[LayerError] = field(default_factory=list)  # most sensitive op first
    search: list[SearchStepRecord] = field(default_factory=list)  # the budget search, in order
    details: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str = "quantization", source: str = "") -> "QuantizationRecord":
        check_fields(source, where, _object(data, where, source), QUANTIZATION_RULES, QUANTIZATION_OPTIONAL_RULES, closed=False)
        typed = set(QUANTIZATION_RULES) | set(QUANTIZATION_OPTIONAL_RULES)
        return cls(
            tool=data["tool"], kept_float=list(data.get("kept_float", [])), always_float=dict(data.get("always_float", {})),
            sensitivity=[LayerError.from_json(e, f"{where}.sensitivity[{i}]", source) for i, e in enumerate(data.get("sensitivity", []))],
            search=[SearchStepRecord.from_json(s, f"{where}.search[{i}]", source) for i, s in enumerate(data.get("search", []))],
            details={k: v for k, v in data.items() if k not in typed},
        )

    def to_json(self) -> dict:
        """The typed fields first (tool, what stayed float, the sensitivity table, the search),
        then the tool's details; empty typed fields other than kept_float are left out."""
        typed = {"always_float": dict(self.always_float), "sensitivity": [e.to_json() for e in self.sensitivity],
                 "search": [s.to_json() for s in self.search]}
        return {"tool": self.tool, "kept_float": list(self.kept_float), **{k: v for k, v in typed.items() if v}, **self.details}


@dataclass
class FileEntry:
    """One model file of a bundle, its sha256 and what the build measured of it."""

    file: str
    sha256: str
    output_map: dict[str, str]  # our output name -> the file's tensor name
    format: str | None = None  # onnx | tflite | coreml
    precision: str | None = None  # a PARITY_THRESHOLDS key
    size_bytes: int | None = None
    input: dict | None = None  # a non-tensor input, e.g. Core ML's image input
    parity: ParityRecord | None = None
    quantization: QuantizationRecord | None = None
    accuracy: ManifestAP | None = None  # WIDER FACE AP, when the build measured it
    extra: dict = field(default_factory=dict)  # fields this code does not read, kept as they are

    @property
    def image_input(self) -> bool:
        return (self.input or {}).get("type") == "image"

    @classmethod
    def from_json(cls, data: dict, where: str = "files[0]", source: str = "") -> "FileEntry":
        check_fields(source, where, data, FILE_ENTRY_RULES, FILE_ENTRY_OPTIONAL_RULES, closed=False)
        known = set(FILE_ENTRY_RULES) | set(FILE_ENTRY_OPTIONAL_RULES)
        return cls(
            file=data["file"], sha256=data["sha256"], output_map=dict(data["output_map"]),
            format=data.get("format"), precision=data.get("precision"), size_bytes=data.get("size_bytes"),
            input=data.get("input"),
            parity=ParityRecord.from_json(data["parity"], f"{where}.parity", source) if "parity" in data else None,
            quantization=(QuantizationRecord.from_json(data["quantization"], f"{where}.quantization", source)
                          if "quantization" in data else None),
            accuracy=ManifestAP.from_json(data["accuracy"], f"{where}.accuracy", source) if "accuracy" in data else None,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> dict:
        entry: dict = {"file": self.file}
        for key in ("format", "precision"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        entry["sha256"] = self.sha256
        if self.size_bytes is not None:
            entry["size_bytes"] = self.size_bytes
        entry["output_map"] = dict(self.output_map)
        if self.input is not None:
            entry["input"] = self.input
        if self.parity is not None:
            entry["parity"] = self.parity.to_json()
        if self.quantization is not None:
            entry["quantization"] = self.quantization.to_json()
        if self.accuracy is not None:
            entry["accuracy"] = self.accuracy.to_json()
        return {**entry, **self.extra}


@dataclass(frozen=True)
class InputSpec:
    """The model input: a letterboxed BGR image minus the mean, `width` x `height`, in `layout`."""

    name: str
    height: int
    width: int
    layout: str  # NCHW | NHWC
    dtype: str
    channel_order: str
    mean: tuple[float, float, float]
    scale: float
    resize: str

    @property
    def size(self) -> InputSize:
        return InputSize(int(self.width), int(self.height))

    def to_json(self) -> dict:
        return {**asdict(self), "mean": list(self.mean)}


@dataclass(frozen=True)
class OutputSpec:
    name: str
    shape: list[int]


@dataclass(frozen=True)
class Checkpoint:
    name: str
    sha256: str


def priors_to_json(priors: PriorConfig) -> dict:
    return {"min_sizes": [list(s) for s in priors.min_sizes], "steps": list(priors.steps),
            "variances": list(priors.variances), "clip": priors.clip}


def priors_from_json(data: dict) -> PriorConfig:
    return PriorConfig(min_sizes=tuple(tuple(s) for s in data["min_sizes"]), steps=tuple(data["steps"]),
                       variances=tuple(data["variances"]), clip=bool(data["clip"]))


@dataclass
class PreferredBy:
    """Who timed a bundle's files and chose its preferred file (`featherface build`, or
    `featherface bench --pick` on the device), where, when, and the times it compared."""

    by: str
    device: str
    when: str
    threads: int | None  # None: the runtime's default
    model_p50_ms: dict[str, float]  # file -> model-only p50 of each candidate timed
    detect_p50_ms: dict[str, float] = field(default_factory=dict)  # file -> whole-detect p50 (bench --pick)

    @classmethod
    def from_json(cls, data: Any, preferred_file: str, source: str = "") -> "PreferredBy":
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: `preferred_by` must be an object" if source else "`preferred_by` must be an object")
        check_fields(source, "preferred_by", data, PREFERRED_BY_RULES, PREFERRED_BY_OPTIONAL_RULES)

        def by_file(value: Any) -> dict[str, float]:
            return dict(value) if isinstance(value, dict) else {preferred_file: value}

        return cls(data["by"], data["device"], data["when"], data["threads"], by_file(data["model_p50_ms"]),
                   by_file(data.get("detect_p50_ms", {})))

    def to_json(self) -> dict:
        record = {"by": self.by, "device": self.device, "when": self.when, "threads": self.threads,
                  "model_p50_ms": dict(self.model_p50_ms)}
        if self.detect_p50_ms:
            record["detect_p50_ms"] = dict(self.detect_p50_ms)
        return record


@dataclass
class Manifest:
    """A bundle's manifest: the single source of truth the SDK and the bench read on a device."""

    format_version: int
    target: str
    arch: str
    checkpoint: Checkpoint | None
    input: InputSpec
    priors: PriorConfig
    outputs: list[OutputSpec]
    thresholds: Thresholds
    tools: dict[str, str]
    files: list[FileEntry] = field(default_factory=list)
    preferred_file: str | None = None
    golden: dict | None = None  # {"file", "sha256", "images"}: verify.golden checks it
    reference_accuracy: ManifestAP | None = None  # WIDER FACE AP of PyTorch FP32, when measured
    preferred_by: PreferredBy | None = None  # None: chosen by the fixed rule, nothing timed
    extra: dict = field(default_factory=dict)  # newer fields, kept when read with strict=False

    def entry(self, name: str) -> FileEntry | None:
        return next((e for e in self.files if e.file == name), None)

    @classmethod
    def from_json(cls, data: Any, source: str = "manifest.json", strict: bool = True) -> "Manifest":
        """The manifest in `data` (parsed JSON), validated; `source` prefixes every message.
        strict=False (the report) keeps unknown fields instead of refusing them."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object")
        version = data.get("format_version")
        if version not in SUPPORTED_VERSIONS:
            raise ManifestError(f"{source}: format_version {version!r} is not supported (this SDK reads {SUPPORTED_VERSIONS})")
        check_fields(source, "", data, MANIFEST_RULES, OPTIONAL_RULES, closed=strict)
        for section, rules in (("input", INPUT_RULES), ("priors", PRIORS_RULES), ("thresholds", THRESHOLDS_RULES)):
            check_fields(source, section, data[section], rules, closed=strict)
        if data["checkpoint"] is not None:
            check_fields(source, "checkpoint", data["checkpoint"], CHECKPOINT_RULES, closed=strict)
        for i, output in enumerate(data["outputs"]):
            check_fields(source, f"outputs[{i}]", output, OUTPUT_RULES, closed=strict)
        names = sorted(output["name"] for output in data["outputs"])
        if names != sorted(OUTPUT_NAMES):
            raise ManifestError(f"{source}: `outputs` are {names}; this SDK reads {sorted(OUTPUT_NAMES)}")
        files = []
        for i, entry in enumerate(data["files"]):
            files.append(FileEntry.from_json(entry, f"files[{i}]", source))
            if sorted(entry["output_map"]) != names:
                raise ManifestError(f"{source}: `files[{i}].output_map` maps {sorted(entry['output_map'])}; expected {names}")
        known = set(MANIFEST_RULES) | set(OPTIONAL_RULES)
        inputs = {k: data["input"][k] for k in INPUT_RULES}
        return cls(
            format_version=version, target=data["target"], arch=data["arch"],
            checkpoint=Checkpoint(data["checkpoint"]["name"], data["checkpoint"]["sha256"]) if data["checkpoint"] else None,
            input=InputSpec(**{**inputs, "mean": tuple(inputs["mean"])}),
            priors=priors_from_json(data["priors"]),
            outputs=[OutputSpec(o["name"], list(o["shape"])) for o in data["outputs"]],
            thresholds=Thresholds(**{k: data["thresholds"][k] for k in THRESHOLDS_RULES}),
            tools=dict(data["tools"]), files=files, preferred_file=data["preferred_file"], golden=data["golden"],
            reference_accuracy=(ManifestAP.from_json(data["reference_accuracy"], "reference_accuracy", source)
                                if "reference_accuracy" in data else None),
            preferred_by=(PreferredBy.from_json(data["preferred_by"], data["preferred_file"], source)
                          if "preferred_by" in data else None),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> dict:
        manifest = {
            "format_version": self.format_version,
            "target": self.target,
            "arch": self.arch,
            "checkpoint": asdict(self.checkpoint) if self.checkpoint else None,
            "input": self.input.to_json(),
            "priors": priors_to_json(self.priors),
            "outputs": [asdict(o) for o in self.outputs],
            "thresholds": asdict(self.thresholds),
            "tools": dict(self.tools),
            "files": [entry.to_json() for entry in self.files],
            "preferred_file": self.preferred_file,
            "golden": self.golden,
        }
        if self.reference_accuracy is not None:
            manifest["reference_accuracy"] = self.reference_accuracy.to_json()
        if self.preferred_by is not None:
            manifest["preferred_by"] = self.preferred_by.to_json()
        return {**manifest, **self.extra}
