"""The parity-check report of a bundle, or of a directory of bundles: Markdown, the JSON
behind its tables, and a self-contained HTML page with plots and detection pictures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from featherface.atomic import write_text_atomic
from featherface.config import TARGETS
from featherface.records import FileEntry, Manifest, ManifestError
from featherface.sdk.bundle import MANIFEST_FILE, BundleError, is_bundle, verified_file
from featherface.verify.parity import MATCH_IOU, ROBUST_MARGIN
from featherface.widerface import SETTINGS

from .report_golden import BundleView, run_golden
from .report_table import accuracy_notes, markdown_table, protocols, ship_lines, table_rows

HEADER = ("file", "format", "precision", "size", "parity", "max abs error", "recall", "precision", "robust recall", "robust precision", "convert s")

# Optional in a manifest (the SDK runs a file without them), required to report on it.
REPORTED_FIELDS = ("format", "precision", "size_bytes", "parity")


class ReportError(ValueError):
    """A report asked of something that is neither a bundle nor a directory of bundles."""


def _row(entry: FileEntry) -> tuple[str, ...]:
    parity = entry.parity
    detections = parity.detections
    return (
        entry.file, entry.format, entry.precision, f"{entry.size_bytes / 1e6:.2f} MB",
        parity.status, f"{parity.max_abs_error:.2e}", f"{detections.recall:.3f}", f"{detections.precision:.3f}",
        f"{detections.robust_recall:.3f}", f"{detections.robust_precision:.3f}", f"{parity.conversion_seconds:.1f}",
    )


def summary_rows(manifest: Manifest) -> list[str]:
    rows = [HEADER] + [_row(entry) for entry in manifest.files]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]


def _parity_images(manifest: Manifest) -> list[str]:
    return manifest.files[0].parity.images if manifest.files else []


def _intro(manifest: Manifest) -> str:
    return (
        f"Input {manifest.input.width}x{manifest.input.height} ({manifest.input.layout}), "
        f"letterboxed; every file run as shipped and compared with PyTorch FP32 on "
        f"{len(_parity_images(manifest))} validation images. Detections: score > {manifest.thresholds.score}, "
        f"NMS {manifest.thresholds.nms_iou}, matched at IoU {MATCH_IOU}. Robust recall (precision) asks every face {ROBUST_MARGIN} "
        f"above the threshold in PyTorch (the file) to be found {ROBUST_MARGIN} below it in the file (PyTorch); "
        f"the verdict uses the robust figures, so a score merely crossing the threshold is not a lost face."
    )


def _summary_lines(bundles: list[BundleView]) -> list[str]:
    rows = table_rows(bundles)
    protocol = ", ".join(protocols(rows))
    ap = f"AP: WIDER FACE validation subset ({protocol}), percent, difference to PyTorch FP32 in points." if protocol else "AP: not measured."
    notes = [f"- {note}" for note in accuracy_notes(rows)]
    ship = ["**What to ship**", "", *[f"- {line}" for line in ship_lines(bundles)], ""]
    return ["## Summary", "", *ship, *markdown_table(rows), "", f"{ap} Recall vs PyTorch: plain (faces PyTorch finds above the score threshold that the file finds above it too) / robust (the verdict's: a face {ROBUST_MARGIN} above the threshold must be found {ROBUST_MARGIN} below it). Max output error: the largest |file - PyTorch| over the raw outputs, box and landmark offsets encoded against the priors (in prior sizes over the variances, not pixels) and face probabilities. Latency: p50 of the model alone, 1 thread, on the machine that wrote the report (`featherface bench` measures more).", ""] + (notes + [""] if notes else [])


def _parity_lines(manifest: Manifest) -> list[str]:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(entry)) + " |" for entry in manifest.files]
    lines += [""]
    for entry in manifest.files:
        tensor = entry.parity.tensor
        cells = ", ".join(f"{name}: max {t.max_abs_error:.2e}, cosine {t.cosine:.6f}" for name, t in tensor.items())
        lines.append(f"- `{entry.file}`: {cells}; thresholds {entry.parity.thresholds}")
    return lines


SENSITIVITY_LINES = 10  # most sensitive ops listed in Markdown (all of the manifest's in HTML)


def _quantization_lines(manifests: list[Manifest]) -> list[str]:
    """What each quantized file kept in float, its most sensitive ops and its budget search."""
    lines = []
    for manifest in manifests:
        for entry in manifest.files:
            if entry.quantization is None:
                continue
            record = entry.quantization
            kept = ", ".join(record.kept_float) or "nothing"
            always = ", ".join(f"{name} ({ops} ops)" for name, ops in record.always_float.items())
            lines += [f"### `{entry.file}` ({manifest.target}, {entry.precision})", "",
                      f"Kept in float by the budget search: {kept}." + (f" Always float: {always}." if always else ""), ""]
            if record.sensitivity:
                lines += ["| # | tensor | op | added NMSE |", "|---|---|---|---|"]
                lines += [f"| {i} | `{error.tensor}` | {error.op} | {error.added_nmse:.3g} |"
                          for i, error in enumerate(record.sensitivity[:SENSITIVITY_LINES], start=1)]
                lines.append("")
            for step in record.search:
                ap = " / ".join(f"{100 * step.ap[s]:.1f}" for s in SETTINGS)
                losses = " / ".join(f"{step.losses[s]:.2f}" for s in SETTINGS)
                lines.append(f"- search step, float: {', '.join(step.kept_float) or 'nothing'}: AP {ap} % (loss {losses} points)"
                             + (f", {step.size_bytes / 1e6:.2f} MB" if step.size_bytes else "") + (", within budget" if step.holds else ""))
            lines.append("")
    return (["## Quantization", ""] + lines) if lines else []


def _images_line(manifest: Manifest) -> str:
    return f"Images: {', '.join(_parity_images(manifest))}"


def _title(bundles: list[BundleView]) -> str:
    arches = ", ".join(dict.fromkeys(b.manifest.arch for b in bundles))
    return f"Parity report: {arches} for {', '.join(b.name for b in bundles)}"


def markdown(bundle: BundleView) -> str:
    manifest = bundle.manifest
    lines = [f"# {_title([bundle])}", "", _intro(manifest), ""]
    lines += _summary_lines([bundle]) + ["## Parity", ""] + _parity_lines(manifest) + [""] + _quantization_lines([manifest])
    lines += ["", _images_line(manifest), "", "Plots and detection pictures: parity.html.", ""]
    return "\n".join(lines)


def combined_markdown(bundles: list[BundleView]) -> str:
    first = bundles[0].manifest
    lines = [f"# {_title(bundles)}", "", _intro(first), ""]
    lines += _summary_lines(bundles)
    for bundle in bundles:
        lines += [f"## {bundle.name}", ""] + _parity_lines(bundle.manifest) + [""]
    lines += _quantization_lines([b.manifest for b in bundles])
    lines += [_images_line(first), "", "Plots and detection pictures: report.html.", ""]
    return "\n".join(lines)


def _write_all(folder: Path, texts: dict[str, str]) -> list[Path]:
    """Each file of a report, once all are rendered: a failure leaves the old set whole."""
    return [write_text_atomic(folder / name, text) for name, text in texts.items()]


def write_parity_report(bundle_dir: Path, manifest: Manifest) -> list[Path]:
    """parity.md, parity.json and parity.html into the bundle (the files and golden.npz
    must already be there: the HTML page re-runs every file on the golden images)."""
    from .report_html import render

    bundle = BundleView(manifest.target, manifest, run_golden(bundle_dir, manifest))
    tables = {"summary": [row.to_json() for row in table_rows([bundle])], "parity": {f.file: f.parity.to_json() for f in manifest.files}}
    texts = {"parity.md": markdown(bundle), "parity.json": json.dumps(tables, indent=2) + "\n",
             "parity.html": render(_title([bundle]), [bundle])}
    return _write_all(bundle_dir, texts)


def _read_manifest(bundle_dir: Path) -> Manifest:
    """The manifest, without the SDK's refusal of fields it does not know: a report must
    show fields newer than the SDK reading bundles."""
    path = bundle_dir / MANIFEST_FILE
    try:
        manifest = Manifest.from_json(json.loads(path.read_text()), str(path), strict=False)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    except ManifestError as err:
        raise ReportError(str(err)) from None
    for index, entry in enumerate(manifest.files):
        missing = [key for key in REPORTED_FIELDS if getattr(entry, key) is None]
        if entry.parity is not None and entry.parity.conversion_seconds is None:
            missing.append("parity.conversion_seconds")
        if missing:
            raise ReportError(f"{path}: files[{index}] ({entry.file}) has no {', '.join(missing)}, "
                              "which the report shows; rebuild the bundle with `featherface build`")
        try:
            verified_file(bundle_dir, manifest, entry.file)  # the build's verdicts hold for the built files only
        except BundleError as err:
            raise ReportError(str(err)) from None
    return manifest


def write_report(path: Path, progress: Callable[[str], None] = lambda _: None) -> list[Path]:
    """The report of `path`: a bundle (its parity.md/.json/.html rewritten) or a directory
    of bundles (one combined report.md/.json/.html in it). Returns the files written."""
    if not path.is_dir():
        raise ReportError(f"{path}: no such directory (expected a bundle or a directory of bundles)")
    if is_bundle(path):
        manifest = _read_manifest(path)
        progress(f"re-running the files of {path} on its golden images")
        return write_parity_report(path, manifest)
    # Hidden directories are a build's staging or retired bundles, not bundles.
    bundles = [p for p in path.iterdir() if not p.name.startswith(".") and is_bundle(p)]
    if not bundles:
        raise ReportError(f"{path}: not a bundle (no manifest.json) and holds no bundles (no */manifest.json)")
    from .report_html import render

    bundles.sort(key=lambda p: (TARGETS.index(p.name) if p.name in TARGETS else len(TARGETS), p.name))
    manifests = [_read_manifest(bundle) for bundle in bundles]  # every bad manifest fails before minutes of runs
    views = []
    for bundle, manifest in zip(bundles, manifests):
        progress(f"re-running the files of {bundle.name} on its golden images")
        views.append(BundleView(bundle.name, manifest, run_golden(bundle, manifest)))
    summary = [row.to_json() for row in table_rows(views)]
    texts = {"report.md": combined_markdown(views),
             "report.json": json.dumps({"bundles": [v.name for v in views], "summary": summary}, indent=2) + "\n",
             "report.html": render(_title(views), views)}
    return _write_all(path, texts)
