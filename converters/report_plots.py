"""The report's plots as PNG bytes: precision-recall curves and output error histograms.

matplotlib is imported only here and only when a plot is drawn (the SDK never needs it);
without it every function returns None and the report says so instead.
"""
from __future__ import annotations

import io

import numpy as np

MISSING = "matplotlib is not installed: no plots (pip install 'featherface[plots]')"
Curve = tuple[str, list[float], list[float]]  # label, recall, precision
ERROR_FLOOR = 1e-9  # the smallest error the histograms resolve; smaller ones (and zeros) fill the first bin


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(figure, plt) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


REFERENCE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 2.2, "zorder": 5}


def _style(index: int) -> dict:
    """Files in distinct colours (then line styles); PyTorch has `REFERENCE_STYLE`."""
    return {"color": f"C{index % 10}", "linewidth": 1.4, "linestyle": ("-", "-.", ":")[index // 10 % 3]}


def pr_curve_png(setting: str, reference: Curve | None, files: list[Curve]) -> bytes | None:
    """One setting's precision-recall curves: a line per file, PyTorch's dashed on top."""
    plt = _pyplot()
    if plt is None:
        return None
    figure, axis = plt.subplots(figsize=(4.3, 3.9))
    for i, (label, recall, precision) in enumerate(files):
        axis.plot(recall, precision, label=label, **_style(i))
    if reference is not None:
        axis.plot(reference[1], reference[2], label=reference[0], **REFERENCE_STYLE)
    axis.set(title=f"WIDER FACE {setting}", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return _png(figure, plt)


def error_histogram_png(errors: dict[str, dict[str, np.ndarray]]) -> bytes | None:
    """Histograms of |file - PyTorch| per output (a panel each), a line per file.

    `errors[output][label]` holds the flattened absolute errors, the same labels in every
    output (one legend below the panels). Log-spaced bins, since FP32 files err by ~1e-6
    and FP16 or INT8 ones by ~1e-3 to 1e-1.
    """
    plt = _pyplot()
    if plt is None:
        return None
    largest = max((float(e.max()) for per_file in errors.values() for e in per_file.values() if e.size), default=1.0)
    bins = np.logspace(np.log10(ERROR_FLOOR), np.log10(max(largest, ERROR_FLOOR * 10)) + 0.1, 60)
    figure, axes = plt.subplots(1, len(errors), figsize=(4.4 * len(errors), 3.4), squeeze=False)
    for axis, (output, per_file) in zip(axes[0], errors.items()):
        for i, (label, values) in enumerate(per_file.items()):
            counts, edges = np.histogram(np.clip(values, ERROR_FLOOR, None), bins=bins)
            axis.stairs(counts / values.size, edges, label=label, **_style(i))
        axis.set_xscale("log")
        axis.set(title=output, xlabel=f"|file - PyTorch FP32| (below {ERROR_FLOOR:.0e}: first bin)", ylabel="fraction of values")
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    columns = min(4, len(labels)) or 1
    figure.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.045 * (1 + (len(labels) - 1) // columns) + 0.02, 1, 1))
    return _png(figure, plt)
