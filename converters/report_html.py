"""The parity report as one self-contained HTML page (styles inline, pictures as data URIs),
so a bundle's report opens anywhere, offline, and travels as a single file."""
from __future__ import annotations

import base64
import html

import numpy as np

from featherface.config import OUTPUT_NAMES
from featherface.records import Checkpoint, ManifestAP
from featherface.verify.parity import MATCH_IOU, ROBUST_MARGIN
from featherface.widerface import SETTINGS

from . import report_images as images
from . import report_plots as plots
from .report_golden import BundleView
from .report_table import (
    COLUMNS,
    NOT_MEASURED,
    SummaryRow,
    accuracy_notes,
    display_row,
    protocols,
    ship_lines,
    status_bars,
    table_rows,
)

FLOAT_PRECISIONS = ("fp32", "fp16")  # any other precision is quantized and gets its own section
SENSITIVITY_ROWS = 20  # the most sensitive tensors shown; the JSON keeps them all
# Columns shown first in the quantization record's tables (sensitivity, groups, search steps).
FIRST_COLUMNS = ("tensor", "op", "nmse", "added_nmse", "name", "kept_float")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px 32px; color: #1d1d1f; max-width: 1500px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; } p, li { font-size: 14px; line-height: 1.45; } .meta { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d0d0; padding: 5px 9px; text-align: left; vertical-align: top; }
td.num { white-space: nowrap; } td.status { min-width: 200px; } .scroll { overflow-x: auto; } td.status small { color: #555; }
th { background: #f2f2f5; } tr:nth-child(even) td { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.reference td { background: #eef3ff; font-weight: 600; }
.pass { color: #0a7a2f; font-weight: 600; } .fail { color: #c62828; font-weight: 600; } .missing { color: #999; font-style: italic; }
.plots, .panels { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #444; max-width: 300px; margin-top: 2px; }
img { display: block; border: 1px solid #e0e0e0; max-width: 100%; height: auto; }
.key span { display: inline-block; width: 12px; height: 12px; margin: 0 4px -1px 12px; border: 2px solid; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; font-size: 13px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _img(data: bytes, mime: str, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}" alt="{_e(alt)}"{size}>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _label(bundle: BundleView, file: str, several: bool) -> str:
    return f"{bundle.name}/{file}" if several else file


def _summary_cell(column: str, text: str, row: SummaryRow) -> str:
    if column == "status":
        bars = status_bars(row)
        return (f'<td class="status"><span class="{_e(row.status)}">{_e(row.status)}</span>'
                + (f"<br><small>{_e(bars)}</small>" if bars else "") + "</td>")
    if text == NOT_MEASURED:
        return f'<td class="missing">{_e(text)}</td>'
    if column.startswith(("AP", "size", "recall", "max", "latency")):
        return f'<td class="num">{_e(text)}</td>'
    return f"<td>{_e(text)}</td>"


def _summary(bundles: list[BundleView]) -> str:
    rows = table_rows(bundles)
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    html_rows = [
        f'<tr class="{"reference" if r.is_reference else "file"}">'
        + "".join(_summary_cell(column, text, r) for column, text in display_row(r).items()) + "</tr>"
        for r in rows
    ]
    protocol = ", ".join(protocols(rows))
    ap = (f"AP: WIDER FACE validation subset, official Easy/Medium/Hard protocol ({_e(protocol)}), in percent, with the "
          "difference to PyTorch FP32 in points." if protocol else "AP: not measured (the manifests carry no accuracy).")
    score = bundles[0].manifest.thresholds.score
    ship = "".join(f"<li>{_e(line).replace('`', '')}</li>" for line in ship_lines(bundles))
    return (
        f"<p><b>What to ship</b></p><ul class=\"ship\">{ship}</ul>"
        f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(html_rows)}</tbody></table></div>"
        f"<p class=\"meta\">{ap} Recall vs PyTorch: plain, the share of the faces PyTorch finds above score "
        f"{score} that the file finds above it too; robust, which the verdict uses: every face PyTorch "
        f"finds above score {score} + {ROBUST_MARGIN} must be found by the file above "
        f"{score} - {ROBUST_MARGIN} (matched at IoU {MATCH_IOU}). Max output error: the largest |file - PyTorch| over "
        "the raw outputs on the parity images: loc and landmarks, offsets encoded against the priors (in prior sizes "
        "over the variances, not pixels), and conf, face probabilities. Latency: p50 of the model alone, 1 thread, on the machine that wrote the report; Core ML files only on a Mac.</p>"
        + "".join(f'<p class="meta">{_e(note)}</p>' for note in accuracy_notes(rows))
    )


def _curve(label: str, accuracy: ManifestAP | None, setting: str) -> plots.Curve | None:
    """A manifest accuracy's curve for one setting, labelled with its AP; None if absent."""
    curve = accuracy.curves.get(setting) if accuracy else None
    if not curve:
        return None
    ap = getattr(accuracy, setting)
    return (label if ap is None else f"{label} (AP {100 * ap:.1f})"), curve["recall"], curve["precision"]


def _pr_curves(bundles: list[BundleView], several: bool) -> str:
    reference_accuracy = next((b.manifest.reference_accuracy for b in bundles if b.manifest.reference_accuracy), None)
    figures = []
    for setting in SETTINGS:
        reference = _curve("PyTorch FP32", reference_accuracy, setting)
        files = [curve for b in bundles for e in b.manifest.files if (curve := _curve(_label(b, e.file, several), e.accuracy, setting))]
        if reference is None and not files:
            return _note(f"Precision-recall curves: {NOT_MEASURED} (no accuracy curves in the manifest).")
        png = plots.pr_curve_png(setting, reference, files)
        if png is None:
            return _note(plots.MISSING)
        figures.append(f"<figure>{_img(png, 'image/png', f'precision-recall {setting}', 430)}</figure>")
    return f'<div class="plots">{"".join(figures)}</div>'


def _error_histograms(bundles: list[BundleView], several: bool) -> str:
    errors: dict[str, dict[str, np.ndarray]] = {name: {} for name in OUTPUT_NAMES}
    images_used = 0
    for bundle in bundles:
        if bundle.golden is None:
            continue
        images_used = max(images_used, len(bundle.golden.names))
        for file, run in bundle.golden.files.items():
            for name in OUTPUT_NAMES:
                if name in run.abs_errors:
                    errors[name][_label(bundle, file, several)] = run.abs_errors[name]
    if not any(errors.values()):
        return _note(f"Output error histograms: {NOT_MEASURED} (no golden vectors, or no file could run here).")
    png = plots.error_histogram_png(errors)
    if png is None:
        return _note(plots.MISSING)
    return (f"<figure>{_img(png, 'image/png', 'output error histograms')}<figcaption style=\"max-width:none\">"
            f"Every output value of each file on the {images_used} golden images, against PyTorch FP32's stored outputs."
            "</figcaption></figure>")


def _detections(bundles: list[BundleView], several: bool) -> str:
    """Per golden image, PyTorch's panel once, then a panel per file of every bundle built
    from the same checkpoint at the same size (their golden images are the same)."""
    groups: dict[tuple, list[tuple[BundleView, int]]] = {}
    for bundle in bundles:
        if bundle.golden is None:
            continue
        for index, name in enumerate(bundle.golden.names):
            groups.setdefault((name, *bundle.network), []).append((bundle, index))
    if not groups:
        return _note(f"Detection pictures: {NOT_MEASURED} (no golden vectors).")
    parts = [
        f'<p class="key">Golden images, letterboxed content.<span style="border-color:rgb{images.REFERENCE}"></span>PyTorch '
        f'<span style="border-color:rgb{images.MATCHED}"></span>found by both<span style="border-color:rgb{images.ONLY_REFERENCE}"></span>'
        f'PyTorch only (lost by the file)<span style="border-color:rgb{images.ONLY_FILE}"></span>file only</p>'
    ]
    def faces_found(group) -> int:  # PyTorch's faces above the threshold on the group's image
        bundle, index = group[1][0]
        return len(images.above(bundle.golden.reference[index], bundle.manifest.thresholds.score).boxes)

    # Pictures where PyTorch finds faces first: a first picture without a face shows nothing.
    for (name, *_), members in sorted(groups.items(), key=faces_found, reverse=True):
        first, first_index = members[0]
        image_rgb = first.golden.images_rgb[first_index]
        reference = images.above(first.golden.reference[first_index], first.manifest.thresholds.score)
        panels = [f"<figure>{_img(images.jpeg(images.reference_panel(image_rgb, reference)), 'image/jpeg', f'PyTorch on {name}')}"
                  f"<figcaption><b>PyTorch FP32</b>: {len(reference.boxes)} faces</figcaption></figure>"]
        for bundle, index in members:
            for file, run in bundle.golden.files.items():
                label = _label(bundle, file, several)
                if run.problem:
                    panels.append(f"<figure><figcaption><b>{_e(label)}</b>: {_e(run.problem)}</figcaption></figure>")
                    continue
                candidate = images.above(run.detections[index], bundle.manifest.thresholds.score)
                diff = images.difference(reference, candidate)
                picture = images.jpeg(images.file_panel(image_rgb, reference, candidate, diff))
                panels.append(f"<figure>{_img(picture, 'image/jpeg', f'{label} on {name}')}<figcaption><b>{_e(label)}</b>: "
                              f"{len(diff.matched)} matched, {len(diff.only_reference)} lost, {len(diff.only_file)} extra</figcaption></figure>")
        parts.append(f"<h3>{_e(name)}</h3><div class=\"panels\">{''.join(panels)}</div>")
    return "".join(parts)


def _compact(value: object) -> str:
    """A nested value in one cell: floats to 4 significant digits, dicts as k=v."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_compact(v) for v in value) or "-"
    return "-" if value is None else str(value)


def _cell(key: str, value: object) -> str:
    """One value of a record row as text: AP (a search step's `accuracy`) in percent with one
    decimal and losses in points, as everywhere in the report; anything else compacted."""
    if isinstance(value, dict) and all(isinstance(value.get(s), float) for s in SETTINGS):
        if key == "accuracy":
            return "AP " + " / ".join(f"{100 * value[s]:.1f}" for s in SETTINGS) + " %"
        if key == "losses":
            return " / ".join(f"{value[s]:.2f}" for s in SETTINGS) + " points"
    return _compact(value)


def _records_table(rows: list[dict], first: tuple[str, ...] = (), limit: int | None = None) -> str:
    """A list of dicts (the quantization record's sensitivity, groups, search steps) as a table."""
    keys = [k for k in first if any(k in row for row in rows)]
    keys += [k for k in dict.fromkeys(k for row in rows for k in row) if k not in keys]
    head = "".join(f"<th>{_e(k)}</th>" for k in ["#", *keys])
    body = "".join(
        f'<tr><td class="num">{rank}</td>'
        + "".join(f'<td class="num">{_compact(row.get(k))}</td>' if isinstance(row.get(k), float) else f"<td>{_e(_cell(k, row.get(k)))}</td>" for k in keys)
        + "</tr>"
        for rank, row in enumerate(rows[:limit], start=1)
    )
    more = f'<p class="meta">{len(rows) - limit} more not shown (all in the manifest).</p>' if limit and len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _is_table(value: object) -> bool:
    """A quantization record's list of dicts (sensitivity, groups, search steps), shown as a table."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _quantization(bundles: list[BundleView], several: bool) -> str:
    entries = [(b, e) for b in bundles for e in b.manifest.files if e.quantization is not None or e.precision not in FLOAT_PRECISIONS]
    if not entries:
        return ""
    parts = ["<h2>Quantization</h2>"]
    for bundle, entry in entries:
        parts.append(f"<h3>{_e(_label(bundle, entry.file, several))} ({_e(entry.precision)})</h3>")
        if entry.quantization is None:
            parts.append(f'<p class="missing">per-layer sensitivity {NOT_MEASURED}</p>')
            continue
        record = entry.quantization
        parts.append(f"<p>Kept in float: <b>{_e(', '.join(record.kept_float) or 'nothing')}</b>.</p>")
        shown = {k: v for k, v in record.to_json().items() if k != "kept_float"}  # as the manifest holds it
        settings = {k: v for k, v in shown.items() if not _is_table(v)}
        cells = "".join(f"<tr><th>{_e(k.replace('_', ' '))}</th><td>{_e(_compact(v))}</td></tr>" for k, v in settings.items())
        parts.append(f'<table class="settings"><tbody>{cells}</tbody></table>')
        for key, rows in shown.items():
            if _is_table(rows):
                title = "Per-layer sensitivity, most sensitive first" if key == "sensitivity" else key.replace("_", " ").capitalize()
                limit = SENSITIVITY_ROWS if key == "sensitivity" else None
                parts.append(f"<p><b>{_e(title)}</b></p>{_records_table(rows, FIRST_COLUMNS, limit)}")
    return "".join(parts)


def _per_output(bundles: list[BundleView], several: bool) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("file", "output", "max abs error", "bound", "mean abs error", "cosine"))
    rows = []
    for bundle in bundles:
        for entry in bundle.manifest.files:
            parity = entry.parity
            for name, figures in parity.tensor.items():
                bound = parity.error_bounds.get(name)
                rows.append(
                    f"<tr><td>{_e(_label(bundle, entry.file, several))}</td><td>{_e(name)}</td>"
                    f"<td class=\"num\">{figures.max_abs_error:.2e}</td><td class=\"num\">{'-' if bound is None else f'{bound:.2e}'}</td>"
                    f"<td class=\"num\">{figures.mean_abs_error:.2e}</td><td class=\"num\">{figures.cosine:.8f}</td></tr>"
                )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render(title: str, bundles: list[BundleView]) -> str:
    """The whole page for one or more bundles (one summary table across all of them)."""
    several = len(bundles) > 1
    first = bundles[0].manifest
    checkpoint = first.checkpoint or Checkpoint("none", "-")
    parity_images = next((e.parity.images for b in bundles for e in b.manifest.files), [])
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class=\"meta\">{_e(first.arch)}, checkpoint {_e(checkpoint.name)} "
        f"(sha256 {_e(checkpoint.sha256[:12])}), input {first.input.width}x{first.input.height} "
        f"letterboxed; featherface {_e(first.tools.get('featherface', '?'))}, torch {_e(first.tools.get('torch', '?'))}.</p>",
        f"<p>Every file is run as shipped and compared with PyTorch FP32 on {len(parity_images)} validation images "
        f"(detections: score &gt; {first.thresholds.score}, NMS {first.thresholds.nms_iou}); the verdict uses "
        "the robust detection figures and, for FP32 files, a bound on every output value.</p>",
        "<h2>Summary</h2>", _summary(bundles),
        "<h2>Precision-recall</h2>", _pr_curves(bundles, several),
        "<h2>Output errors</h2>", _error_histograms(bundles, several),
        "<h2>Detections: PyTorch vs each file</h2>",
        _detections(bundles, several),
        _quantization(bundles, several),
        "<h2>Per output</h2>", _per_output(bundles, several),
        f"<p class=\"meta\">Parity images: {_e(', '.join(parity_images))}</p>",
    ]
    problems = sorted({f"{_label(b, f, several)}: {run.problem}" for b in bundles if b.golden for f, run in b.golden.files.items() if run.problem})
    body += [_note(problem) for problem in problems]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
