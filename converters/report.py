"""The parity-check report of a bundle: a table per file, as Markdown and JSON."""
from __future__ import annotations

import json
from pathlib import Path

from featherface.atomic import write_text_atomic

HEADER = ("file", "format", "precision", "size", "parity", "max abs error", "recall", "precision", "robust recall", "robust precision", "convert s")


def _row(entry: dict) -> tuple[str, ...]:
    parity = entry["parity"]
    max_error = max(t["max_abs_error"] for t in parity["tensor"].values())
    det = parity["detections"]
    return (
        entry["file"], entry["format"], entry["precision"], f"{entry['size_bytes'] / 1e6:.2f} MB",
        parity["status"], f"{max_error:.2e}", f"{det['recall']:.3f}", f"{det['precision']:.3f}",
        f"{det['robust_recall']:.3f}", f"{det['robust_precision']:.3f}", f"{parity['conversion_seconds']:.1f}",
    )


def summary_rows(manifest: dict) -> list[str]:
    rows = [HEADER] + [_row(entry) for entry in manifest["files"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]


def markdown(manifest: dict) -> str:
    first = manifest["files"][0]["parity"] if manifest["files"] else {"images": []}
    lines = [
        f"# Parity report: {manifest['arch']} for {manifest['target']}",
        "",
        f"Input {manifest['input']['width']}x{manifest['input']['height']} ({manifest['input']['layout']}), "
        f"letterboxed; every file run as shipped and compared with PyTorch FP32 on "
        f"{len(first['images'])} validation images. Detections: score > {manifest['thresholds']['score']}, "
        f"NMS {manifest['thresholds']['nms_iou']}, matched at IoU 0.5. Robust recall (precision) asks every face 0.1 "
        f"above the threshold in PyTorch (the file) to be found 0.1 below it in the file (PyTorch); "
        f"the verdict uses the robust figures, so a score merely crossing the threshold is not a lost face.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(_row(entry)) + " |" for entry in manifest["files"]]
    lines += ["", "## Per output", ""]
    for entry in manifest["files"]:
        tensor = entry["parity"]["tensor"]
        cells = ", ".join(f"{name}: max {t['max_abs_error']:.2e}, cosine {t['cosine']:.6f}" for name, t in tensor.items())
        lines.append(f"- `{entry['file']}`: {cells}; thresholds {entry['parity']['thresholds']}")
    lines += ["", f"Images: {', '.join(first['images'])}", ""]
    return "\n".join(lines)


def write_parity_report(bundle_dir: Path, manifest: dict) -> None:
    write_text_atomic(bundle_dir / "parity.md", markdown(manifest))
    write_text_atomic(bundle_dir / "parity.json", json.dumps({f["file"]: f["parity"] for f in manifest["files"]}, indent=2) + "\n")
