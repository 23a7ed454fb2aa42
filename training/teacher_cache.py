"""The teacher's outputs stored once per batch, so that a later run over the same
augmented batches skips the teacher's pass.

Sample i of epoch e is a pure function of (seed, e, i) and the batch order of (seed, e),
so every stage of a recipe run with the same data settings sees the same batches: the
first stage fills the cache, the next ones read it (the teacher's forward pass is about
as costly as the student's forward and backward together at 640 for RetinaFace).

Stored compactly, in float16, only what the distillation terms read:
- the face-minus-background logit margin at every prior (a two-class softmax, and so
  the KL term and the teacher's confidence, depend on nothing else);
- boxes and landmarks only at the priors the box and landmark terms use (the teacher is
  confident there, or the prior is matched to a face): a few hundred of 16,800.
Feature maps are not stored: runs whose feature or attention weight is non-zero cannot
use a cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from featherface.atomic import write_text_atomic

from .outputs import DetectorOutputs

__all__ = ["TeacherCache", "compact", "expand", "used_priors"]

FORMAT = 1
FINGERPRINT_FILE = "fingerprint.json"
PROBE_STRIDE = 9973  # one input value in this many identifies a batch


def used_priors(teacher: DetectorOutputs, positive: Tensor, min_score: float) -> Tensor:
    """[N, A] priors whose boxes or landmarks the distillation terms read."""
    return (F.softmax(teacher.conf_logits, dim=-1)[..., 1] > min_score) | positive


def compact(teacher: DetectorOutputs, keep: Tensor) -> dict[str, Tensor]:
    """The teacher's outputs as stored: margins everywhere, regression at `keep` [N, A]."""
    conf = teacher.conf_logits
    return {
        "margin": (conf[..., 1] - conf[..., 0]).half(),
        "index": keep.nonzero().int(),
        "loc": teacher.loc[keep].half(),
        "landmarks": teacher.landmarks[keep].half(),
    }


def expand(stored: dict[str, Tensor]) -> DetectorOutputs:
    """DetectorOutputs equivalent to the teacher's for the distillation terms: logits
    (0, margin), regression zero where it was not stored, no feature levels."""
    margin = stored["margin"].float()
    images, priors = stored["index"].long().unbind(1)

    def scatter(values: Tensor) -> Tensor:
        full = margin.new_zeros(*margin.shape, values.shape[-1])
        full[images, priors] = values.float()
        return full

    conf = torch.stack([torch.zeros_like(margin), margin], dim=-1)
    return DetectorOutputs(scatter(stored["loc"]), conf, scatter(stored["landmarks"]), [])


class TeacherCache:
    """One file per (epoch, rank, step) in `directory`, valid for one `fingerprint` (every
    setting that shapes the batches and the teacher's outputs); a directory made under
    other settings is refused rather than read."""

    def __init__(self, directory: str | Path, fingerprint: dict) -> None:
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps({"format": FORMAT, **fingerprint}))  # as read back
        stamp = self.directory / FINGERPRINT_FILE
        if stamp.is_file():
            saved = json.loads(stamp.read_text())
            if saved != self.fingerprint:
                changed = sorted(k for k in {*saved, *self.fingerprint} if saved.get(k) != self.fingerprint.get(k))
                raise ValueError(f"teacher cache {self.directory} was made with other settings ({', '.join(changed)}); use a new directory")
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_text_atomic(stamp, json.dumps(self.fingerprint, indent=2, sort_keys=True) + "\n")

    def _path(self, epoch: int, rank: int, step: int) -> Path:
        return self.directory / f"e{epoch:03d}_r{rank}_s{step:05d}.pt"

    def get(self, epoch: int, rank: int, step: int, images: Tensor) -> DetectorOutputs | None:
        """The stored outputs for this batch, None when not stored yet."""
        path = self._path(epoch, rank, step)
        if not path.is_file():
            return None
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if not torch.equal(stored["probe"], _probe(images)):
            raise ValueError(f"{path} holds another batch than this run's epoch {epoch + 1} step {step}: the cache is stale")
        return expand(stored)

    def put(self, epoch: int, rank: int, step: int, images: Tensor, teacher: DetectorOutputs, keep: Tensor) -> None:
        path = self._path(epoch, rank, step)
        partial = path.with_suffix(".part")
        torch.save({**compact(teacher, keep), "probe": _probe(images)}, partial)
        partial.replace(path)


def _probe(images: Tensor) -> Tensor:
    return images.detach().flatten()[::PROBE_STRIDE].clone()
