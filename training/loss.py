"""RetinaFace's MultiBoxLoss: prior matching, hard-negative mining, smooth-L1 regression.

Targets per image are [K, 15] float rows: normalised xyxy box (4), normalised landmarks
(10, -1 when absent) and a landmark flag (1 present, 0 absent), as `WiderFaceDataset`
produces. Priors are normalised cxcywh [A, 4] (`featherface.model.box_coding.make_priors`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from featherface.config import NUM_LANDMARKS, PRIORS
from featherface.model.box_coding import encode_boxes, encode_landmarks, iou_matrix

from .run_config import LossConfig

__all__ = ["LossConfig", "Matches", "MultiBoxLoss", "LossTerms", "match", "mine_hard_negatives"]

# A target row (WiderFaceDataset): normalised xyxy box, landmark (x, y) pairs, landmark flag.
BOX = slice(0, 4)
POINTS = slice(4, 4 + 2 * NUM_LANDMARKS)
FLAG = POINTS.stop


@dataclass
class Matches:
    """Per prior of one image: regression targets and which priors count.

    loc [A, 4], landmarks [A, 10] encoded offsets; positive [A] bool; with_landmarks [A]
    bool (positive and the matched face has landmarks)."""

    loc: Tensor
    landmarks: Tensor
    positive: Tensor
    with_landmarks: Tensor


def match(targets: Tensor, priors: Tensor, config: LossConfig = LossConfig()) -> Matches:
    """Assign each prior its best-overlapping face (RetinaFace's `match`).

    A prior is positive when that IoU >= config.iou_threshold; in addition each face's
    own best prior is forced positive and assigned to that face (when its IoU reaches
    config.force_min_iou). Worked example: a face exactly equal to a prior box gets that
    prior with IoU 1, so its loc target is exactly zero.
    """
    num_priors = priors.shape[0]
    if targets.numel() == 0:
        zeros = priors.new_zeros
        false = torch.zeros(num_priors, dtype=torch.bool, device=priors.device)
        return Matches(zeros(num_priors, 4), zeros(num_priors, 2 * NUM_LANDMARKS), false, false.clone())
    boxes, landmarks, flags = targets[:, BOX], targets[:, POINTS], targets[:, FLAG]
    priors_xyxy = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)
    overlaps = iou_matrix(boxes, priors_xyxy)  # [K, A]
    best_prior_iou, best_prior = overlaps.max(dim=1)  # per face
    best_face_iou, best_face = overlaps.max(dim=0)  # per prior
    forced = best_prior_iou >= config.force_min_iou
    best_face_iou[best_prior[forced]] = 2.0  # above any threshold
    # Later faces win a prior that is best for several, as in RetinaFace's loop.
    for face in torch.nonzero(forced).flatten().tolist():
        best_face[best_prior[face]] = face
    positive = best_face_iou >= config.iou_threshold
    loc = encode_boxes(boxes[best_face], priors, PRIORS.variances)
    landm = encode_landmarks(landmarks[best_face], priors, PRIORS.variances)
    with_landmarks = positive & (flags[best_face] > 0)
    loc = torch.where(positive[:, None], loc, torch.zeros_like(loc))
    landm = torch.where(with_landmarks[:, None], landm, torch.zeros_like(landm))
    return Matches(loc, landm, positive, with_landmarks)


def mine_hard_negatives(background_loss: Tensor, positive: Tensor, ratio: int) -> Tensor:
    """[N, A] bool: per image the `ratio * positives` non-positive priors (at most A - 1)
    with the largest background loss; positives are never chosen."""
    loss = background_loss.detach().masked_fill(positive, float("-inf"))
    num_neg = torch.clamp(ratio * positive.sum(dim=1, keepdim=True), max=positive.shape[1] - 1)
    order = loss.argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)
    return (rank < num_neg) & ~positive


@dataclass
class LossTerms:
    """Loss terms of one batch; `total` is the weighted sum that gets backpropagated.
    `positive` [N, A] marks the matched priors (used by distillation)."""

    total: Tensor
    loc: Tensor
    conf: Tensor
    landmarks: Tensor
    positive: Tensor
    matches: list[Matches]


class MultiBoxLoss:
    """loss = 2 * smoothL1(loc) + CE(conf on positives + hard negatives) + smoothL1(landmarks).

    loc and conf are normalised by the number of positives in the batch, landmarks by
    the number of positives whose face has landmarks (0 when none has: WIDER train).
    """

    def __init__(self, config: LossConfig = LossConfig()) -> None:
        self.config = config

    def __call__(self, loc: Tensor, conf_logits: Tensor, landmarks: Tensor, targets: list[Tensor], priors: Tensor) -> LossTerms:
        cfg = self.config
        matches = [match(t.to(priors.dtype), priors, cfg) for t in targets]
        loc_t = torch.stack([m.loc for m in matches])
        landm_t = torch.stack([m.landmarks for m in matches])
        positive = torch.stack([m.positive for m in matches])
        with_landmarks = torch.stack([m.with_landmarks for m in matches])

        num_pos = positive.sum().clamp(min=1).to(loc.dtype)
        loss_loc = F.smooth_l1_loss(loc[positive], loc_t[positive], reduction="sum") / num_pos
        num_landm = with_landmarks.sum().clamp(min=1).to(loc.dtype)
        loss_landm = F.smooth_l1_loss(landmarks[with_landmarks], landm_t[with_landmarks], reduction="sum") / num_landm

        log_probs = F.log_softmax(conf_logits, dim=-1)
        negative = mine_hard_negatives(-log_probs[..., 0], positive, cfg.negative_ratio)
        chosen = positive | negative
        labels = positive.long()
        loss_conf = F.nll_loss(log_probs[chosen], labels[chosen], reduction="sum") / num_pos

        total = cfg.loc_weight * loss_loc + cfg.conf_weight * loss_conf + cfg.landmark_weight * loss_landm
        return LossTerms(total, loss_loc, loss_conf, loss_landm, positive, matches)
