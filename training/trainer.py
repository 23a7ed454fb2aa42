"""The training loop: plain MultiBoxLoss training or distillation from a frozen teacher
(optionally phased: loss weights and backbone freezing per epoch, `distill_config.settings_at`),
AdamW + OneCycle, per-epoch atomic checkpoints, resume, a time budget, and multi-process
data parallelism under `torchrun` (gloo: the loop runs on the CPU).

Files in `out_dir`: `last.pth` (the model's state dict, loadable by `load_weights`),
`resume.pth` (epoch, model, optimizer and scheduler state), `log.csv` (one row per
epoch) and `run.json` (settings and outcome).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from featherface.atomic import atomic_path, write_text_atomic
from featherface.config import PRIORS
from featherface.model.box_coding import make_priors
from featherface.model.checkpoint import CheckpointError, load_backbone_weights, load_weights, read_state_dict, save_weights
from featherface.model.registry import get_variant
from featherface.model_names import BACKBONE_ACTIVATION, SWITCHES
from featherface.sdk.bundle import sha256_of

from .augment import AugmentConfig
from .data import ParseStats, WiderFaceDataset, collate, resolve_training_data
from .distill import distillation_loss, freeze_teacher, same_backbone, teacher_outputs, temperature
from .distill_config import WEIGHTS, EpochSettings, Phase, settings_at
from .loss import MultiBoxLoss
from .outputs import WithFeatures
from .run_config import TeacherConfig, TrainConfig
from .teacher_cache import TeacherCache, used_priors

__all__ = ["TeacherConfig", "TrainConfig", "TrainResult", "build_student", "train"]

WEIGHTS_FILE = "last.pth"
RESUME_FILE = "resume.pth"
LOG_FILE = "log.csv"
RUN_FILE = "run.json"
TERMS = ("loss", "task", "loc", "conf", "landmarks", "kd", "feature", "attention", "box_kd", "landmark_kd")


@dataclass
class TrainResult:
    model: nn.Module  # the trained student (unwrapped), on every rank
    epochs_done: int  # epochs completed in total, including resumed ones
    start_epoch: int
    stopped_early: bool  # by the time budget
    seconds: float  # the whole run's, a resumed run's earlier processes included
    images_per_second: float
    out_dir: Path
    history: list[dict] = field(default_factory=list)  # one row per epoch of the whole run


def init_from_checkpoint(student: nn.Module, path: str | Path, arch: str, switched: Sequence[str]) -> None:
    """Strict load of a checkpoint into the network it was trained as (the default one, or
    for v2-ultra the shared-head one that every stage before level heads was, or a narrower
    pyramid); the student then takes every weight the two networks share, and the modules
    only it has (e.g. the level gate of dynamic weight sharing) keep their initialisation.
    Per-level heads start as copies of a shared head, and a wider pyramid starts as the
    narrower one (`_widened`), so that the student starts as the network it grows from.
    The backbone's activation is not inherited: a V2 Ultra trained on the teacher's frozen
    LeakyReLU backbone may start a ReLU one (the `ultra-relu` preset)."""
    keep = (BACKBONE_ACTIVATION,)
    state = read_state_dict(path)
    layout = _head_layout_switch(state, arch)
    width = _pyramid_width(state, arch)
    if not switched and not layout and width == _pyramid_width(student.state_dict(), arch):
        load_weights(student, path, arch=arch, keep=keep)
        return
    trained = load_weights(build_student(arch, layout, width), path, arch=arch, keep=keep).state_dict()
    own = student.state_dict()
    unmatched = [k for k in own if k != BACKBONE_ACTIVATION and k not in trained and _shared_head_key(k) not in trained]
    if unmatched and not switched:  # without a switch the network must be the file's
        raise CheckpointError(f"{path}: nothing for {len(unmatched)} entries of the network, e.g. {unmatched[0]}")
    taken = {k: v if k == BACKBONE_ACTIVATION else trained.get(k, trained.get(_shared_head_key(k), v)) for k, v in own.items()}
    try:
        student.load_state_dict({k: _widened(v, own[k]) for k, v in taken.items()}, strict=True)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


def _pyramid_width(state: dict, arch: str) -> int:
    """V2 Ultra's pyramid channels in a state dict (0 for other variants)."""
    lateral = state.get("lateral.0.0.weight")
    return int(lateral.shape[0]) if arch == "v2-ultra" and lateral is not None else 0


def _widened(trained: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """`trained` in the leading corner of `initial` (a wider network's tensor): the old
    channels keep their weights, the new ones their initialisation, and no old output reads
    a new input (those weights are 0), so the wider network computes what the narrower did
    until training moves the zeros. Statistics of new BN channels stay at their 0 / 1."""
    if trained.shape == initial.shape:
        return trained
    if trained.dim() != initial.dim() or any(trained_side > initial_side for trained_side, initial_side in zip(trained.shape, initial.shape)):
        raise ValueError(f"cannot narrow a {tuple(trained.shape)} tensor into {tuple(initial.shape)}")
    wide = initial.clone()
    wide[tuple(slice(0, n) for n in trained.shape)] = trained
    if wide.dim() >= 2:
        wide[: trained.shape[0], trained.shape[1]:] = 0
    return wide


def _head_layout_switch(state: dict, arch: str) -> tuple[str, ...]:
    """("level_heads",) when a v2-ultra checkpoint's heads are laid out unlike the default's."""
    if arch != "v2-ultra":
        return ()
    from featherface.model.v2_ultra import FeatherFaceV2UltraConfig

    has_level_heads = "ClassHead.1.conv1x1.weight" in state
    return () if has_level_heads == FeatherFaceV2UltraConfig().level_heads else ("level_heads",)


def _shared_head_key(key: str) -> str:
    """`BboxHead.2.conv1x1.weight` -> `BboxHead.0.conv1x1.weight`: where a shared head keeps it."""
    return re.sub(r"^(ClassHead|BboxHead|LandmarkHead)\.\d+\.", r"\1.0.", key)


def _teacher_cache(config: TrainConfig, source: str, images: int, augment: AugmentConfig, world: int, weights: str) -> TeacherCache:
    """The cache of `config.teacher.cache`, keyed by every setting that shapes the batches
    and what the teacher's stored outputs are used for."""
    loss = config.teacher.loss
    if loss.feature_weight or loss.attention_weight:
        raise ValueError("a teacher cache holds no feature maps: it needs --feature-weight 0 and --attention-weight 0")
    return TeacherCache(config.teacher.cache, {
        "data": str(source), "images": images, "augment": dataclasses.asdict(augment),
        "seed": config.seed, "batch_size": config.batch_size, "processes": world, "input_size": config.input_size,
        "teacher": config.teacher.arch, "teacher_sha256": sha256_of(Path(weights)),
        # variances were a LossConfig field when the first caches were written: kept in the key so that they still match
        "match": {**dataclasses.asdict(config.loss), "variances": list(PRIORS.variances)},
        "regression_min_score": loss.regression_min_score,
    })


def build_student(arch: str, switched: tuple[str, ...] = (), channels: int = 0) -> nn.Module:
    """A registered variant; for v2-ultra with the named switches flipped from the default
    and, when `channels` is not 0, that pyramid width."""
    if not switched and not channels:
        return get_variant(arch).build()
    if arch != "v2-ultra":
        raise ValueError(f"switches and --channels exist only for v2-ultra, not {arch!r}")
    from featherface.model.v2_ultra import FeatherFaceV2Ultra, FeatherFaceV2UltraConfig

    unknown = sorted(set(switched) - set(SWITCHES))
    if unknown:
        raise ValueError(f"unknown switch(es) {', '.join(unknown)}; expected some of: {', '.join(SWITCHES)}")
    default = FeatherFaceV2UltraConfig()
    flipped = {n: not getattr(default, n) for n in switched}
    return FeatherFaceV2Ultra(dataclasses.replace(default, **flipped, channels=channels or default.channels))


def set_backbone_frozen(student: nn.Module, frozen: bool) -> None:
    """No gradients for the MobileNetV1 `body` (phase 1 of a phased distillation); the
    caller also keeps it in eval mode so that its BN statistics stay the teacher's."""
    for p in student.body.parameters():
        p.requires_grad_(not frozen)


def learning_rate_schedule(optimizer, lr: float, total_steps: int, warmup_fraction: float):
    """OneCycle with at least one warm-up step and one annealing step (OneCycleLR divides
    by zero when its warm-up rounds to nothing); a constant rate for runs of < 3 steps."""
    if total_steps < 3:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total_steps, pct_start=min(max(warmup_fraction, 2.0 / total_steps), 0.5)
    )


def _wrap(student: nn.Module, world: int) -> nn.Module:
    """What the loop calls; DDP registers gradient hooks only for parameters that require
    grad at construction, so it is rebuilt whenever freezing changes."""
    net: nn.Module = WithFeatures(student)
    return nn.parallel.DistributedDataParallel(net) if world > 1 else net


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Distributed:
    """Rank and world size under torchrun; a process group (gloo, for CPU tensors) only when
    world size > 1."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.owned = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            self.owned = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        return values

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if self.world == 1:
            return flag
        box = torch.tensor([int(flag)])
        dist.broadcast(box, 0)
        return bool(box.item())

    def sync_buffers(self, model: nn.Module) -> None:
        """BN running statistics drift apart per replica between DDP's broadcasts; make
        them rank 0's so that every replica and the saved file hold the same model."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def close(self) -> None:
        if self.owned:
            dist.barrier()
            dist.destroy_process_group()


def _format_duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"


def _save_resume(path: Path, epoch: int, model: nn.Module, optimizer, scheduler, config: TrainConfig, steps_per_epoch: int, world: int) -> None:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "config": json.dumps(config.to_dict()),
        "steps_per_epoch": steps_per_epoch,
        "world_size": world,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _check_resumable(state: dict, config: TrainConfig, steps_per_epoch: int, world: int, path: Path) -> None:
    saved = json.loads(state["config"])
    wanted = config.to_dict()
    # What fixes the OneCycle schedule and the model's shape must not change on resume.
    keys = ("arch", "epochs", "batch_size", "input_size", "lr", "warmup_fraction", "switched_innovations")
    changed = [f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in keys if saved.get(k) != wanted[k]]
    if state["steps_per_epoch"] != steps_per_epoch:
        changed.append(f"steps per epoch: {state['steps_per_epoch']} -> {steps_per_epoch}")
    if state["world_size"] != world:
        changed.append(f"processes: {state['world_size']} -> {world}")
    if changed:
        raise ValueError(f"cannot resume from {path}: the run's settings changed ({'; '.join(changed)})")


def _logged_epochs(path: Path, up_to: int) -> list[dict]:
    """The rows of `log.csv` for epochs 1..`up_to` (the last row per epoch): what a resumed
    run trained before, so that its record covers the whole run, not just its last process."""
    if up_to <= 0 or not path.exists():
        return []
    with path.open(newline="") as f:
        rows = {int(r["epoch"]): {k: int(v) if v.isdigit() else float(v) for k, v in r.items() if v} for r in csv.DictReader(f)}
    return [rows[e] for e in range(1, up_to + 1) if e in rows]


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train(config: TrainConfig, progress: Callable[[str], None] = _stderr) -> TrainResult:
    """Run `config`; see the module doc for the files written. Only rank 0 writes and logs."""
    ddp = _Distributed()
    try:
        return _train(config, ddp, progress if ddp.main else (lambda _message: None))
    finally:
        ddp.close()


@dataclass
class _Data:
    """The training images and how each process draws its batches from them."""

    source: str
    stats: ParseStats
    annotations: list
    dataset: WiderFaceDataset
    sampler: DistributedSampler
    loader: DataLoader


def _training_data(config: TrainConfig, ddp: _Distributed, progress: Callable[[str], None]) -> _Data:
    data = resolve_training_data(config.data)
    annotations = data.annotations[: config.max_images] if config.max_images else data.annotations
    progress(f"data: {data.source}: {data.stats.summary()}; training on {len(annotations)} images")
    dataset = WiderFaceDataset(annotations, dataclasses.replace(config.augment, size=config.input_size), seed=config.seed)
    sampler = DistributedSampler(dataset, num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=config.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers, collate_fn=collate, drop_last=True)
    if len(loader) == 0:
        raise ValueError(
            f"{len(annotations)} images cannot fill one batch of {config.batch_size} per process "
            f"x {ddp.world} processes; lower --batch-size"
        )
    return _Data(data.source, data.stats, annotations, dataset, sampler, loader)


def _student(config: TrainConfig) -> nn.Module:
    student = build_student(config.arch, config.switched_innovations, config.channels)
    if config.init_weights:
        init_from_checkpoint(student, config.init_weights, config.arch, config.switched_innovations)
    if config.backbone_weights:
        load_backbone_weights(student, config.backbone_weights)
    return student


def _teacher(config: TrainConfig, student: nn.Module, progress: Callable[[str], None]) -> tuple[nn.Module | None, str | None]:
    """(the frozen teacher, its weights file), or (None, None) without distillation; copies
    the teacher's backbone into the student when the config asks."""
    if config.teacher is None:
        return None, None
    variant = get_variant(config.teacher.arch)
    weights = config.teacher.weights or variant.find_default_weights()
    if weights is None:
        raise ValueError(f"teacher {config.teacher.arch} has no default weights here; pass --teacher-weights")
    teacher = freeze_teacher(load_weights(variant.build(), weights, arch=config.teacher.arch))
    if config.teacher.init_student_backbone:
        if not (hasattr(student, "body") and hasattr(teacher, "body")):
            raise ValueError("init_student_backbone needs a MobileNetV1 `body` in both networks")
        student.body.load_state_dict(teacher.body.state_dict(), strict=True)
    progress(f"teacher: {config.teacher.arch} from {weights} (frozen, eval mode)")
    return teacher, str(weights)


def _resume(config: TrainConfig, path: Path, student: nn.Module, optimizer, scheduler, steps_per_epoch: int,
            world: int, progress: Callable[[str], None]) -> int:
    """The first epoch to run: 0, or the one after `path`'s (whose states are loaded) with --resume."""
    if not config.resume:
        return 0
    if not path.is_file():
        progress(f"no {path} yet: starting afresh")
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    _check_resumable(state, config, steps_per_epoch, world, path)
    student.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress(f"resumed from {path}: epoch {state['epoch'] + 2}/{config.epochs} next")
    return state["epoch"] + 1


@dataclass
class _Losses:
    """One batch's loss terms (TERMS): the task's, and the teacher's when distilling."""

    criterion: MultiBoxLoss
    priors: torch.Tensor
    teacher: nn.Module | None
    cache: TeacherCache | None
    rank: int

    def __call__(self, net: nn.Module, student: nn.Module, images: torch.Tensor, targets: list, shared_backbone: bool,
                 epoch: int, step: int, kd_temperature: float, settings) -> dict:
        if shared_backbone:
            with torch.no_grad():
                backbone_levels = student.body(images)
            outputs = net(None, backbone_levels)
        else:
            outputs = net(images)
        task = self.criterion(outputs.loc, outputs.conf_logits, outputs.landmarks, targets, self.priors)
        terms = dict.fromkeys(TERMS, 0.0)
        terms.update(loss=task.total, task=task.total, loc=task.loc, conf=task.conf, landmarks=task.landmarks)
        if self.teacher is None:
            return terms
        teacher_out = self.cache.get(epoch, self.rank, step, images) if self.cache else None
        if teacher_out is None:
            teacher_out = (teacher_outputs(self.teacher, None, backbone_levels) if shared_backbone
                           else teacher_outputs(self.teacher, images))
            if self.cache:
                keep = used_priors(teacher_out, task.positive, settings.loss.regression_min_score)
                self.cache.put(epoch, self.rank, step, images, teacher_out, keep)
        distill = distillation_loss(outputs, teacher_out, task.total, task.positive, kd_temperature, settings.loss)
        terms.update(loss=distill.total, kd=distill.kd, feature=distill.feature, attention=distill.attention,
                     box_kd=distill.box, landmark_kd=distill.landmarks)
        return terms


def _step_line(config: TrainConfig, epoch: int, step: int, steps_per_epoch: int, sums: torch.Tensor, elapsed: float,
               images_per_step: int, kd_temperature: float | None, lr: float) -> str:
    """The progress line: running means of the epoch's terms, rate and time left."""
    rate = step * images_per_step / elapsed
    remaining = (config.epochs - epoch - 1) * steps_per_epoch + steps_per_epoch - step
    means = {k: float(v) / step for k, v in zip(TERMS, sums)}
    shown = " ".join(f"{k} {means[k]:.4f}" for k in TERMS if k != "loss" and (means[k] or k in ("loc", "conf")))
    return (
        f"epoch {epoch + 1}/{config.epochs} step {step}/{steps_per_epoch} loss {means['loss']:.4f} ({shown})"
        + (f" T {kd_temperature:.2f}" if kd_temperature is not None else "")
        + f" lr {lr:.2e} {rate:.1f} img/s eta {_format_duration(remaining * images_per_step / rate)}"
    )


def _run_summary(config: TrainConfig, data: _Data, world: int, start_epoch: int, done: int, stopped_early: bool,
                 seconds: float, history: list[dict]) -> dict:
    """run.json: the settings, the data, and how the run went."""
    trained = sum(r["images"] for r in history)
    return {
        "config": config.to_dict(),
        "data": {
            "source": data.source, **dataclasses.asdict(data.stats), "used_images": len(data.annotations),
            "events": dict(sorted(Counter(a.path.parent.name for a in data.annotations).items())),
        },
        "processes": world,
        "threads": torch.get_num_threads(),
        "start_epoch": start_epoch,
        "epochs_done": done,
        "stopped_early": stopped_early,
        "seconds": round(seconds, 1),
        "images_per_second": round(trained / seconds, 2) if seconds > 0 else None,
        "history": history,
    }


def _phases(config: TrainConfig) -> tuple[Phase, ...]:
    """The distillation's phase table; empty for one phase."""
    return config.teacher.loss.phases if config.teacher else ()


@dataclass
class _Run:
    """What every epoch of one invocation works with."""

    config: TrainConfig
    ddp: _Distributed
    progress: Callable[[str], None]
    out_dir: Path
    data: _Data
    student: nn.Module
    losses: _Losses
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data.loader)

    @property
    def images_per_step(self) -> int:
        """Over all processes."""
        return self.config.batch_size * self.ddp.world

    @property
    def phases(self) -> tuple[Phase, ...]:
        return _phases(self.config)


@dataclass(frozen=True)
class _Phase:
    """An epoch's distillation settings (None without a teacher) and the network trained under them."""

    settings: EpochSettings | None
    net: nn.Module  # what the loop calls (`_wrap`)
    frozen: bool  # the student's backbone
    shared_backbone: bool  # one frozen backbone pass serves student and teacher


def _train(config: TrainConfig, ddp: _Distributed, progress: Callable[[str], None]) -> TrainResult:
    run, start_epoch = _set_up(config, ddp, progress)
    started = time.perf_counter()
    history: list[dict] = _logged_epochs(run.out_dir / LOG_FILE, start_epoch)
    earlier_seconds = sum(r["seconds"] for r in history)
    epoch_seconds: list[float] = []
    phase: _Phase | None = None
    stopped_early = False
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.epochs):
        phase = _enter_phase(run, epoch, phase)
        kd_temperature = temperature(epoch, config.epochs, phase.settings.loss) if phase.settings else float("nan")
        means, seconds = _train_epoch(run, phase, epoch, kd_temperature)
        epoch_seconds.append(seconds)
        row = _epoch_row(run, epoch, means, seconds, kd_temperature)
        history.append(row)
        _save_epoch(run, epoch, row, seconds)
        if _budget_stops(run, epoch, time.perf_counter() - started, epoch_seconds):
            stopped_early = True
            break
    seconds = time.perf_counter() - started + earlier_seconds  # a resumed run counts its earlier epochs
    return _finish(run, start_epoch, epoch + 1, stopped_early, seconds, history)


def _set_up(config: TrainConfig, ddp: _Distributed, progress: Callable[[str], None]) -> tuple[_Run, int]:
    """The run's parts, with a resumed run's states loaded, and the first epoch to train."""
    phases = _phases(config)
    if phases and phases[-1].end != config.epochs:
        raise ValueError(f"the distillation's phase table ends after epoch {phases[-1].end}; epochs must be {phases[-1].end}, not {config.epochs}")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    out_dir = Path(config.out_dir)
    if ddp.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    data = _training_data(config, ddp, progress)
    steps_per_epoch = len(data.loader)
    student = _student(config)
    teacher, teacher_weights = _teacher(config, student, progress)
    cache = None
    if teacher is not None and config.teacher.cache:
        cache = _teacher_cache(config, data.source, len(data.annotations), data.dataset.augment_config, ddp.world, teacher_weights)
        progress(f"teacher cache: {config.teacher.cache}")
    losses = _Losses(MultiBoxLoss(config.loss), make_priors(config.input_size, config.input_size), teacher, cache, ddp.rank)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = learning_rate_schedule(optimizer, config.lr, config.epochs * steps_per_epoch, config.warmup_fraction)
    start_epoch = _resume(config, out_dir / RESUME_FILE, student, optimizer, scheduler, steps_per_epoch, ddp.world, progress)

    if any(p.freeze_backbone for p in phases) and not hasattr(student, "body"):
        raise ValueError(f"{config.arch} has no MobileNetV1 `body` to freeze in a phased distillation")
    run = _Run(config, ddp, progress, out_dir, data, student, losses, optimizer, scheduler)
    progress(
        f"training {config.arch}: {config.epochs} epochs x {run.steps_per_epoch} steps x {run.images_per_step} images "
        f"at {config.input_size}px, {ddp.world} process(es), {torch.get_num_threads()} thread(s) each"
        + (f", budget {config.max_minutes:g} min" if config.max_minutes else "")
    )
    return run, start_epoch


def _enter_phase(run: _Run, epoch: int, current: _Phase | None) -> _Phase:
    """`epoch`'s settings and network: the student is rewrapped when its backbone's frozen
    state changes, and a phased run says where each phase starts."""
    settings = settings_at(epoch, run.config.teacher.loss) if run.config.teacher else None
    frozen = bool(settings and settings.freeze_backbone)
    if current is None or frozen != current.frozen:
        net, shared_backbone = _rewrap(run, frozen, epoch)
    else:
        net, shared_backbone = current.net, current.shared_backbone
    if run.phases and (current is None or settings != current.settings):
        weights = ", ".join(f"{k.removesuffix('_weight')} {getattr(settings.loss, k):g}" for k in WEIGHTS if getattr(settings.loss, k))
        run.progress(f"epoch {epoch + 1}: phase with backbone {'frozen' if frozen else 'trainable'}; weights {weights}")
    return _Phase(settings, net, frozen, shared_backbone)


def _rewrap(run: _Run, frozen: bool, epoch: int) -> tuple[nn.Module, bool]:
    """The network the loop calls (DDP hooks only the parameters that learn when it is built),
    and whether the frozen student backbone equals the teacher's, so that one pass serves both."""
    if run.phases:
        set_backbone_frozen(run.student, frozen)
    net = _wrap(run.student, run.ddp.world)  # before the comparison: DDP makes every replica rank 0's
    teacher = run.losses.teacher
    shared_backbone = teacher is not None and frozen and same_backbone(run.student, teacher)
    if shared_backbone:
        run.progress(f"epoch {epoch + 1}: student and teacher share one frozen backbone pass")
    return net, shared_backbone


def _train_epoch(run: _Run, phase: _Phase, epoch: int, kd_temperature: float) -> tuple[torch.Tensor, float]:
    """One optimizer step per batch, with progress lines: the loss terms (TERMS) averaged over
    the epoch's steps and all processes, and the epoch's seconds."""
    config, data = run.config, run.data
    data.dataset.set_epoch(epoch)
    data.sampler.set_epoch(epoch)
    phase.net.train()
    if phase.frozen:
        run.student.body.eval()
    shown_temperature = kd_temperature if run.losses.teacher is not None else None
    sums = torch.zeros(len(TERMS), dtype=torch.float64)
    epoch_start = time.perf_counter()
    for step, (images, targets) in enumerate(data.loader, start=1):
        terms = run.losses(phase.net, run.student, images, targets, phase.shared_backbone, epoch, step, kd_temperature, phase.settings)
        total = terms["loss"]
        if not torch.isfinite(total):
            raise RuntimeError(f"non-finite loss at epoch {epoch + 1} step {step}: " + ", ".join(f"{k} {float(v):.4g}" for k, v in terms.items()))
        run.optimizer.zero_grad(set_to_none=True)
        total.backward()
        run.optimizer.step()
        run.scheduler.step()
        sums += torch.tensor([float(terms[k].detach()) if torch.is_tensor(terms[k]) else terms[k] for k in TERMS], dtype=torch.float64)
        if step % config.log_every == 0 or step == run.steps_per_epoch:
            run.progress(_step_line(config, epoch, step, run.steps_per_epoch, sums, time.perf_counter() - epoch_start, run.images_per_step,
                                    shown_temperature, run.scheduler.get_last_lr()[0]))
    run.ddp.sync_buffers(run.student)
    means = run.ddp.all_mean(sums / run.steps_per_epoch)
    return means, time.perf_counter() - epoch_start


def _epoch_row(run: _Run, epoch: int, means: torch.Tensor, seconds: float, kd_temperature: float) -> dict:
    """`epoch`'s row of log.csv and of the run's history."""
    images = run.steps_per_epoch * run.images_per_step
    return {
        "epoch": epoch + 1,
        "steps": run.steps_per_epoch,
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 2),
        "lr": run.scheduler.get_last_lr()[0],
        "temperature": kd_temperature,
        **{k: round(float(v), 6) for k, v in zip(TERMS, means)},
    }


def _save_epoch(run: _Run, epoch: int, row: dict, seconds: float) -> None:
    """The epoch's checkpoints and log row (rank 0), so that a stopped run loses at most one epoch."""
    if run.ddp.main:
        save_weights(run.student, run.out_dir / WEIGHTS_FILE)
        _save_resume(run.out_dir / RESUME_FILE, epoch, run.student, run.optimizer, run.scheduler, run.config, run.steps_per_epoch, run.ddp.world)
        _append_csv(run.out_dir / LOG_FILE, row)
    run.progress(f"epoch {epoch + 1}/{run.config.epochs} done in {_format_duration(seconds)}: loss {row['loss']:.4f}, "
                 f"{row['images_per_s']} img/s; saved {run.out_dir / WEIGHTS_FILE}")


def _budget_stops(run: _Run, epoch: int, spent: float, epoch_seconds: list[float]) -> bool:
    """Whether to stop after `epoch`, because one more epoch of the mean length would overrun
    --max-minutes; rank 0 decides for every process."""
    config = run.config
    over_budget = bool(config.max_minutes) and spent + sum(epoch_seconds) / len(epoch_seconds) > config.max_minutes * 60
    if epoch + 1 < config.epochs and run.ddp.agree(over_budget):
        run.progress(f"time budget of {config.max_minutes:g} min reached after {_format_duration(spent)}: stopping after epoch {epoch + 1}")
        return True
    return False


def _finish(run: _Run, start_epoch: int, done: int, stopped_early: bool, seconds: float, history: list[dict]) -> TrainResult:
    """The final weights (--save) and run.json (rank 0), and the run's result (every rank)."""
    if run.ddp.main:
        if run.config.save:
            save_weights(run.student, run.config.save)
            run.progress(f"final weights: {run.config.save}")
        summary = _run_summary(run.config, run.data, run.ddp.world, start_epoch, done, stopped_early, seconds, history)
        write_text_atomic(run.out_dir / RUN_FILE, json.dumps(summary, indent=2) + "\n")
    trained = sum(r["images"] for r in history)
    return TrainResult(
        run.student, done, start_epoch, stopped_early, seconds,
        trained / seconds if seconds > 0 else math.nan, run.out_dir, history,
    )
