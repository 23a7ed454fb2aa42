"""PyTorch -> ONNX: opset `ONNX_OPSET`, dynamic batch (optionally dynamic height/width), simplified
with onnxslim, checked with onnx.checker, with the bundle's metadata embedded."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from featherface.atomic import atomic_path
from featherface.config import INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES, InputSize


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int | InputSize,
    *,
    dynamic_batch: bool = True,
    simplify: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export `model` for `input_size` (an int N: N x N). `simplify=False` leaves out onnxslim: its
    graph made onnx2tf produce wrong TFLite files (docs/measurements.md, "Figures behind the
    code's thresholds"), and onnx2tf runs onnxsim itself anyway."""
    import onnx
    import onnxslim

    model = model.eval()
    size = InputSize.of(input_size)
    example = torch.zeros(1, 3, size.height, size.width)
    input_axes = {0: "batch"} if dynamic_batch else {}
    output_axes = {name: dict(input_axes) for name in OUTPUT_NAMES}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # Tracing warns about Python ints computed from shapes (static "same" padding);
        # with a fixed input size they are constants, which the parity check confirms.
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo exporter needs onnxscript and gains nothing here.
        torch.onnx.export(
            model, (example,), str(tmp), opset_version=ONNX_OPSET, dynamo=False,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: input_axes, **output_axes} if input_axes else None,
            do_constant_folding=True,
        )
        graph = onnx.load(str(tmp))
        if simplify:
            graph = onnxslim.slim(graph)
        for key, value in (metadata or {}).items():
            graph.metadata_props.add(key=key, value=str(value))
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
    return Path(path)
