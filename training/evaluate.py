"""WIDER FACE validation AP of a torch model, through the SDK's own pre/postprocessing.

Two protocols: the paper's (each image at its original size) and the deployment one
(letterboxed into N x N, e.g. 640). Both use the evaluation thresholds
(featherface.config.WIDER_EVAL_THRESHOLDS: a low score threshold, as AP needs). Predictions go through the standard
prediction files (`write_predictions`, same truncation as the published RetinaFace
scripts) and the official Easy/Medium/Hard evaluator. `featherface eval --arch` is its command.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from featherface.config import PRIORS, WIDER_EVAL_THRESHOLDS, Thresholds
from featherface.evaluation import evaluate_detector, protocol_name
from featherface.paths import WIDERFACE
from featherface.sdk.box_coding import make_priors
from featherface.sdk.faces import postprocess_arrays
from featherface.sdk.preprocess import preprocess, preprocess_original_size
from featherface.widerface import WiderAP

__all__ = ["detect_for_eval", "evaluate_model", "protocol_name"]


@torch.no_grad()
def detect_for_eval(model: nn.Module, image_rgb: np.ndarray, input_size: int | None, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [K, 4] xyxy pixels of the image, scores [K]) for one RGB image."""
    if input_size:
        tensor, box = preprocess(image_rgb, input_size)
    else:
        tensor, box = preprocess_original_size(image_rgb)
    height, width = tensor.shape[2:]
    loc, conf, landmarks = model(torch.from_numpy(tensor))
    boxes, scores, _ = postprocess_arrays(
        loc[0].numpy(), conf[0].numpy(), landmarks[0].numpy(), make_priors(height, width),
        box, height, width, thresholds, PRIORS.variances,
    )
    return boxes, scores


def evaluate_model(
    model: nn.Module,
    widerface_root: str | Path = WIDERFACE,
    input_size: int | None = None,
    thresholds: Thresholds = WIDER_EVAL_THRESHOLDS,
    limit: int = 0,
    pred_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> WiderAP:
    """Easy/Medium/Hard AP of `model` on WIDER_val (the first `limit` images, 0 = all).

    input_size None or 0: original size (the paper's protocol); N: letterboxed into
    N x N. `pred_dir` keeps the prediction files (default: a temporary directory).
    """
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            result = evaluate_detector(
                lambda rgb: detect_for_eval(model, rgb, input_size, thresholds), widerface_root,
                pred_dir or scratch, limit=limit, progress=progress,
            )
    finally:
        model.train(was_training)
    return replace(result, protocol=protocol_name(input_size))
