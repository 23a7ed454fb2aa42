"""The report's one summary table, in the spirit of a benchmark table: a row per model file
of one or more bundles, plus PyTorch FP32, as raw figures (JSON) and as display text.

Optional figures (absent ones read "not measured"): the manifest's `reference_accuracy` and
each file's `accuracy` (`records.ManifestAP`), and the latency the golden re-run measured.
Rows are `SummaryRow`s; report.json holds them as JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from featherface.choice import fastest
from featherface.records import FileEntry, Manifest, ManifestAP
from featherface.units import speed_words
from featherface.widerface import SETTINGS

from .report_golden import BundleView

NOT_MEASURED = "not measured"
COLUMNS = (
    "target", "format", "precision", "file", "size", "AP easy", "AP medium", "AP hard",
    "recall vs PyTorch (plain / robust)", "max output error", "latency p50", "status",
)


@dataclass(frozen=True)
class RowAccuracy:
    """A row's WIDER FACE AP: fractions per setting (None: not measured) under `protocol`,
    the difference to PyTorch in points; without figures, `note` says why (e.g. Core ML
    runs only on macOS)."""

    protocol: str | None
    ap: dict[str, float | None]
    delta: dict[str, float | None]
    note: str | None


@dataclass(frozen=True)
class SummaryRow:
    """One row of the summary table: a model file, or PyTorch FP32 (`status` "reference",
    no target), with the figures the table shows; None where nothing was measured."""

    target: str | None
    format: str
    precision: str
    file: str
    size_bytes: int | None
    accuracy: RowAccuracy | None
    robust_recall: float | None
    recall: float | None
    max_abs_error: float | None
    error_bound: float | None
    latency_p50_ms: float | None
    status: str  # pass | fail | reference
    thresholds: dict | None  # the parity bars (ParityThresholds), None for PyTorch
    reasons: list[str]

    @property
    def is_reference(self) -> bool:
        return self.status == "reference"

    def to_json(self) -> dict:
        """The row as report.json and parity.json hold it."""
        return asdict(self)


def _accuracy(accuracy: ManifestAP | None, reference: ManifestAP | None) -> RowAccuracy | None:
    """The manifest's `accuracy` (or `reference_accuracy`) of a file, None when it has none."""
    if accuracy is None:
        return None
    ap = accuracy.ap()
    if all(value is None for value in ap.values()):
        return RowAccuracy(None, {}, {}, accuracy.reason)
    return RowAccuracy(accuracy.protocol, ap, accuracy.delta_points(reference), None)


def reference_row(manifest: Manifest) -> SummaryRow:
    """The PyTorch FP32 row every file is compared with."""
    return SummaryRow(
        target=None, format="pytorch", precision="fp32",
        file=(manifest.checkpoint and manifest.checkpoint.name) or f"{manifest.arch} (no checkpoint)",
        size_bytes=None, accuracy=_accuracy(manifest.reference_accuracy, None), robust_recall=None,
        recall=None, max_abs_error=None, error_bound=None, latency_p50_ms=None, status="reference",
        thresholds=None, reasons=[],
    )


def file_row(manifest: Manifest, entry: FileEntry, latency_ms: float | None) -> SummaryRow:
    parity = entry.parity
    bounds = [b for b in parity.error_bounds.values() if b is not None]
    return SummaryRow(
        target=manifest.target, format=entry.format, precision=entry.precision, file=entry.file,
        size_bytes=entry.size_bytes, accuracy=_accuracy(entry.accuracy, manifest.reference_accuracy),
        robust_recall=parity.detections.robust_recall, recall=parity.detections.recall,
        max_abs_error=parity.max_abs_error,
        error_bound=max(bounds) if bounds else None, latency_p50_ms=latency_ms,
        status=parity.status, thresholds=parity.thresholds, reasons=parity.reasons,
    )


def file_rows(bundle: BundleView) -> list[SummaryRow]:
    return [file_row(bundle.manifest, entry, bundle.latency_ms(entry.file)) for entry in bundle.manifest.files]


def table_rows(bundles: list[BundleView]) -> list[SummaryRow]:
    """PyTorch first (once per network: arch, checkpoint and input size), then every file."""
    references: dict[tuple, SummaryRow] = {}
    for bundle in bundles:
        references.setdefault(bundle.network, reference_row(bundle.manifest))
    return [*references.values(), *(row for bundle in bundles for row in file_rows(bundle))]


def _ap_cell(accuracy: RowAccuracy | None, setting: str) -> str:
    ap = accuracy.ap.get(setting) if accuracy else None
    if ap is None:
        return NOT_MEASURED
    delta = accuracy.delta.get(setting)
    return f"{100 * ap:.1f}" + ("" if delta is None else f" ({round(delta, 2) or 0.0:+.2f})")  # never "-0.00"


def _size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "-"
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e5 else f"{size_bytes / 1e3:.1f} kB"


def status_bars(row: SummaryRow) -> str:
    """The bars a file was held to (and, on failure, why it missed them); "" for PyTorch."""
    if row.thresholds is None:
        return ""
    bars = [f"recall \u2265 {row.thresholds['min_recall']}", f"precision \u2265 {row.thresholds['min_precision']}"]
    if row.error_bound is not None:
        bars.append(f"error \u2264 {row.error_bound:.1e}")
    return ", ".join(bars) + ("; " + "; ".join(row.reasons) if row.reasons else "")


def status_text(row: SummaryRow) -> str:
    """"pass" or "fail" with the bars it was held to."""
    bars = status_bars(row)
    return f"{row.status} ({bars})" if bars else row.status


def display_row(row: SummaryRow) -> dict[str, str]:
    """The row as the table shows it, keyed by `COLUMNS`."""
    latency = row.latency_p50_ms
    cells = {
        "target": row.target or "-", "format": row.format, "precision": row.precision,
        "file": row.file, "size": _size(row.size_bytes),
        "recall vs PyTorch (plain / robust)": "reference" if row.is_reference else f"{row.recall:.3f} / {row.robust_recall:.3f}",
        "max output error": "reference" if row.is_reference else f"{row.max_abs_error:.1e}",
        "latency p50": NOT_MEASURED if latency is None else f"{latency:.1f} ms",
        "status": status_text(row),
    }
    cells.update({f"AP {s}": _ap_cell(row.accuracy, s) for s in SETTINGS})
    return {column: cells[column] for column in COLUMNS}


def protocols(rows: list[SummaryRow]) -> list[str]:
    """The distinct AP protocols in the table (the report names each)."""
    return sorted({r.accuracy.protocol for r in rows if r.accuracy and r.accuracy.protocol})


def accuracy_notes(rows: list[SummaryRow]) -> list[str]:
    """Why AP is missing where the manifest says, one line per reason."""
    files: dict[str, list[str]] = {}
    for r in rows:
        if r.accuracy and r.accuracy.note:
            files.setdefault(r.accuracy.note, []).append(f"{r.target}/{r.file}" if r.target else r.file)
    return [f"AP not measured for {', '.join(names)}: {note}" for note, names in files.items()]


def markdown_table(rows: list[SummaryRow]) -> list[str]:
    cells = [display_row(r) for r in rows]
    return ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)] + ["| " + " | ".join(row.values()) + " |" for row in cells]


def ship_lines(bundles: list[BundleView]) -> list[str]:
    """One line per bundle: the file to ship, i.e. the fastest file that passed parity on the
    machine that wrote the report (among files within `choice.SAME_SPEED` of it, the smallest), with
    its latency, size and AP, and how the bundle's preferred file compares."""
    lines = []
    for bundle in bundles:
        target = bundle.manifest.target
        rows = file_rows(bundle)
        passed = [r for r in rows if r.status == "pass"]
        timed = [r for r in passed if r.latency_p50_ms is not None]
        if not passed:
            lines.append(f"{target}: no file passed parity: nothing to ship.")
            continue
        if not timed:
            names = ", ".join(f"`{r.file}`" for r in passed)
            lines.append(f"{target}: {names} passed parity; none could be timed on this machine: "
                         f"measure them on the device with `featherface bench`.")
            continue
        choice = fastest({r.file: r.latency_p50_ms for r in timed}, {r.file: r.size_bytes for r in timed})
        best = next(r for r in timed if r.file == choice)
        ap = best.accuracy.ap if best.accuracy else {}
        figures = [f"{best.latency_p50_ms:.1f} ms", _size(best.size_bytes)]
        if all(ap.get(s) is not None for s in SETTINGS):
            figures.append("AP " + " / ".join(f"{100 * ap[s]:.1f}" for s in SETTINGS) + " %")
        line = f"{target}: ship `{best.file}` ({', '.join(figures)}), the fastest file that passed parity here"
        preferred = next((r for r in timed if r.file == bundle.manifest.preferred_file), None)
        if preferred is not None and preferred is not best:
            line += (f"; the bundle's preferred `{preferred.file}` is "
                     f"{speed_words(preferred.latency_p50_ms / best.latency_p50_ms)}")
        lines.append(line + ". Measured on this machine; on the device, `featherface bench` decides.")
    return lines
