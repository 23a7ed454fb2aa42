"""Every setting of a training or distillation run, as frozen records without torch: the
CLI reads its defaults from them (`featherface --help` runs where torch is absent), the
trainer runs them, and run.json records them."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from featherface.config import DEFAULT_INPUT_SIZE
from featherface.paths import WIDERFACE

from .augment import AugmentConfig
from .distill_config import DistillConfig

__all__ = ["LossConfig", "TeacherConfig", "TrainConfig"]


@dataclass(frozen=True)
class LossConfig:
    """iou_threshold: a prior is a face when its best face overlaps it at least this much.
    force_min_iou: each face's best prior becomes a positive whatever its IoU, provided it
    reaches this (RetinaFace's guard against faces no prior can represent; 0 = always).
    negative_ratio: hard negatives kept per positive. Weights: total = loc_weight * loc +
    conf_weight * conf + landmark_weight * landmarks."""

    iou_threshold: float = 0.35
    force_min_iou: float = 0.2
    negative_ratio: int = 7
    loc_weight: float = 2.0
    conf_weight: float = 1.0
    landmark_weight: float = 1.0


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen teacher of a distillation run.

    weights: its checkpoint (None: the variant's default weights, e.g. ../shared's V1).
    init_student_backbone: copy the teacher's MobileNetV1 `body` into the student first
    (both share the backbone; by far the best start for a short budget). Applied after
    `init_weights`, whose backbone it replaces: the CLI sets it only without --init-weights
    (or with --teacher-backbone).
    cache: a directory of the teacher's outputs per batch (teacher_cache): filled by the
    first run with these data settings, read by the next ones instead of the teacher.
    """

    arch: str = "v1"
    weights: str | None = None
    init_student_backbone: bool = True
    loss: DistillConfig = DistillConfig()
    cache: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; defaults follow the paper's recipe (640 px crops, batch 32,
    350 epochs, AdamW 1e-3 with OneCycle).

    data: a WIDER FACE root, its WIDER_train folder, or a RetinaFace label.txt.
    batch_size: per process (the global batch is batch_size x processes).
    warmup_fraction: OneCycle's share of steps spent raising the learning rate.
    max_minutes: wall-clock budget of this invocation (0: none); training stops after the
    epoch that would otherwise overrun it, and still saves. threads: torch threads per
    process (0: torch's default). max_images: use only the first N images (0: all).
    switched_innovations: V2 Ultra innovation switches flipped from their default (ablations).
    channels: V2 Ultra's pyramid width (0: the default's); --init-weights may be narrower.
    save: where the final weights go as well (e.g. model/weights/v2_ultra.pth).
    """

    arch: str = "v2-ultra"
    data: str = str(WIDERFACE)
    out_dir: str = "runs/train"
    epochs: int = 350
    batch_size: int = 32
    input_size: int = DEFAULT_INPUT_SIZE
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    seed: int = 0
    workers: int = 0
    threads: int = 0
    max_minutes: float = 0.0
    log_every: int = 10
    max_images: int = 0
    resume: bool = False
    init_weights: str | None = None
    backbone_weights: str | None = None
    switched_innovations: tuple[str, ...] = ()
    channels: int = 0
    save: str | None = None
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    teacher: TeacherConfig | None = None

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))
