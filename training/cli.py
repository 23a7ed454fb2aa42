"""Subcommands `train`, `distill` and `ablate` for the `featherface` command.

`featherface/cli.py` registers them with `add_*_parser(subparsers)`; each sets `run=`,
a callable taking the parsed Namespace and returning an exit code. Standalone:
`python -m featherface.training.cli train ...` (and under `torchrun` for several processes).
Building the parsers must not import torch (`featherface --help` runs on devices without it).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from featherface.arg_types import int_at_least, square_input_size
from featherface.config import DEFAULT_INPUT_SIZE, MAX_THREADS
from featherface.errors import run_reporting
from featherface.model_names import ARCH_NAMES, INNOVATIONS, SWITCHES
from featherface.paths import WIDERFACE

from .augment import AugmentConfig
from .distill_config import PRESETS, DistillConfig
from .run_config import TeacherConfig, TrainConfig

__all__ = [
    "add_ablate_parser",
    "add_distill_parser",
    "add_train_parser",
    "build_parser",
    "main",
]



def _size_or_zero(text: str) -> int:
    """argparse type: a square input size (`square_input_size`), or 0."""
    if text.strip() == "0":
        return 0
    try:
        return square_input_size(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (or 0 for each image's original size)") from None


def _number(allow_zero: bool = False, maximum: float = math.inf):
    """A finite float above 0 (or from 0 when `allow_zero`), at most `maximum`: NaN, infinity
    and negative values would be accepted by float() alone and misread by the trainer
    (integers: featherface.arg_types.int_at_least)."""
    bound = ("at least 0" if allow_zero else "positive") + (f" and at most {maximum:g}" if maximum < math.inf else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0) and value <= maximum):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _crop_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(0 < scale < math.inf for scale in scales):
        raise argparse.ArgumentTypeError(f"crop scales must be positive and finite, got {text}")
    return scales


def _mosaic_grids(text: str) -> tuple[int, ...]:
    try:
        grids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,3, got {text!r}") from None
    if not all(grid >= 2 for grid in grids):
        raise argparse.ArgumentTypeError(f"a mosaic grid has at least 2 x 2 tiles, got {text}")
    return grids


def _add_training_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    defaults = TrainConfig()  # one copy of every default
    parser.add_argument("--data", default=str(WIDERFACE), help="WIDER FACE root, its WIDER_train folder, or a RetinaFace label.txt (default %(default)s)")
    parser.add_argument("--out", default=default_out, help="run directory: last.pth, resume.pth, log.csv, run.json (default %(default)s)")
    parser.add_argument("--epochs", type=int_at_least(1), help=f"epochs; fixes the OneCycle schedule (default {defaults.epochs}, the paper's; distill --preset: the preset's)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=defaults.batch_size, help="images per step and process (default %(default)s)")
    parser.add_argument("--input-size", type=square_input_size, default=defaults.input_size, help="square training size (default %(default)s)")
    parser.add_argument("--lr", type=_number(), default=defaults.lr, help="AdamW peak learning rate of OneCycle (default %(default)s)")
    parser.add_argument("--weight-decay", type=_number(allow_zero=True), default=defaults.weight_decay, help="AdamW weight decay (default %(default)s)")
    parser.add_argument("--warmup-fraction", type=_number(allow_zero=True, maximum=1.0), default=defaults.warmup_fraction, help="OneCycle's share of steps with a rising learning rate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of initialisation, data order and augmentation (default %(default)s)")
    parser.add_argument("--workers", type=int_at_least(0), default=defaults.workers, help="data-loading processes (default %(default)s: in the training process)")
    parser.add_argument("--threads", type=int_at_least(0, MAX_THREADS), default=defaults.threads, help="torch threads per process (default: torch's choice)")
    parser.add_argument("--max-minutes", type=_number(allow_zero=True), default=defaults.max_minutes, help="wall-clock budget: stop after the epoch that would overrun it, and save (default: none)")
    parser.add_argument("--max-images", type=int_at_least(0), default=defaults.max_images, help="train on the first N images only (default: all)")
    parser.add_argument("--log-every", type=int_at_least(1), default=defaults.log_every, help="progress line every N steps (default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/resume.pth when present")
    parser.add_argument("--init-weights", help="start from this full checkpoint (strict)")
    parser.add_argument("--backbone-weights", help="ImageNet MobileNetV1-0.25 weights for the backbone (e.g. ../shared/weights/mobilenetV1X0.25_imagenet.tar)")
    parser.add_argument("--switch", action="append", default=[], choices=SWITCHES, metavar="SWITCH",
                        help=f"flip a v2-ultra switch from its default (repeatable): {', '.join(SWITCHES)}")
    parser.add_argument("--channels", type=int_at_least(1), default=defaults.channels,
                        help="v2-ultra pyramid width (default: the variant's); a narrower --init-weights is widened, starting as itself")
    parser.add_argument("--crop-scales", type=_crop_scales, metavar="S,S,...",
                        help="square crop side as fractions of the image's short side, one drawn per try; above 1 zooms out "
                        f"(default: RetinaFace's {','.join(f'{s:g}' for s in AugmentConfig.crop_scales)})")
    parser.add_argument("--mosaic", type=_probability, default=defaults.augment.mosaic, metavar="P",
                        help="probability that a sample is a grid of augmented photos (--mosaic-grids): "
                        "crowds of small faces (default %(default)s)")
    parser.add_argument("--mosaic-grids", type=_mosaic_grids, default=AugmentConfig.mosaic_grids, metavar="N,N,...",
                        help="the mosaic's grid sides, one drawn per mosaic sample "
                        f"(default {','.join(map(str, AugmentConfig.mosaic_grids))}: 2x2 or 3x3)")
    parser.add_argument("--min-face-size", type=_number(allow_zero=True), default=AugmentConfig.min_face_size, help="drop faces smaller than this many pixels at the training size (default %(default)s)")
    parser.add_argument("--save", help="also write the final weights here (e.g. model/weights/v2_ultra.pth)")


def _add_distill_options(parser: argparse.ArgumentParser) -> None:
    from_defaults = "(default %(default)s)"
    parser.add_argument("--teacher-arch", default=TeacherConfig.arch, choices=ARCH_NAMES, help=f"teacher variant {from_defaults}")
    parser.add_argument("--teacher-weights", help="teacher checkpoint (default: the variant's default weights)")
    backbone = parser.add_mutually_exclusive_group()
    backbone.add_argument("--no-teacher-backbone", action="store_true",
                          help="do not initialise the student's backbone from the teacher's (the default with --init-weights)")
    backbone.add_argument("--teacher-backbone", action="store_true",
                          help="initialise the student's backbone from the teacher's even over --init-weights (the default without)")
    parser.add_argument("--teacher-cache", metavar="DIR",
                        help="store the teacher's outputs per batch here, or read them when a run with the same data settings did")
    defaults = DistillConfig()  # the seed's recipe, one copy
    parser.add_argument("--task-weight", type=_number(allow_zero=True), default=defaults.task_weight, help=f"MultiBoxLoss weight {from_defaults}")
    parser.add_argument("--kd-weight", type=_number(allow_zero=True), default=defaults.kd_weight, help=f"T^2 KL(teacher || student) weight {from_defaults}")
    parser.add_argument("--feature-weight", type=_number(allow_zero=True), default=defaults.feature_weight, help=f"feature alignment weight {from_defaults}")
    parser.add_argument("--attention-weight", type=_number(allow_zero=True), default=defaults.attention_weight, help=f"attention transfer weight {from_defaults}")
    parser.add_argument("--box-weight", type=_number(allow_zero=True), default=defaults.box_weight, help=f"box regression towards the teacher {from_defaults}")
    parser.add_argument("--landmark-weight", type=_number(allow_zero=True), default=defaults.landmark_weight,
                        help=f"landmark regression towards the teacher on matched priors {from_defaults}")
    parser.add_argument("--temperature-range", type=_number(allow_zero=True), default=defaults.temperature_range,
                        help=f"T(epoch) = range * (1 - epoch / epochs) + min {from_defaults}")
    parser.add_argument("--kd-per", choices=("prior", "face"), default=defaults.kd_per,
                        help=f"KL normalisation: mean over priors (the seed's) or per expected teacher face prior {from_defaults}")
    parser.add_argument("--temperature-min", type=_number(allow_zero=True), default=defaults.temperature_min, help=f"see --temperature-range {from_defaults}")


def train_config_from_args(args: argparse.Namespace, distill: bool):
    """The TrainConfig that a parsed `train` / `distill` / `ablate` command describes."""
    phases = PRESETS[args.preset] if getattr(args, "preset", None) else ()
    teacher = None
    if distill:
        teacher = TeacherConfig(
            arch=args.teacher_arch,
            weights=args.teacher_weights,
            init_student_backbone=args.teacher_backbone or not (args.no_teacher_backbone or args.init_weights),
            cache=args.teacher_cache,
            loss=DistillConfig(
                task_weight=args.task_weight, kd_weight=args.kd_weight, feature_weight=args.feature_weight,
                attention_weight=args.attention_weight, box_weight=args.box_weight, landmark_weight=args.landmark_weight,
                temperature_range=args.temperature_range, temperature_min=args.temperature_min, kd_per=args.kd_per, phases=phases,
            ),
        )
    return TrainConfig(
        arch=args.arch, data=args.data, out_dir=args.out, batch_size=args.batch_size,
        epochs=args.epochs or (phases[-1].end if phases else TrainConfig.epochs),
        input_size=args.input_size, lr=args.lr, weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction,
        seed=args.seed, workers=args.workers, threads=args.threads, max_minutes=args.max_minutes,
        log_every=args.log_every, max_images=args.max_images, resume=args.resume, init_weights=args.init_weights,
        backbone_weights=args.backbone_weights, switched_innovations=tuple(args.switch), channels=args.channels, save=args.save,
        augment=AugmentConfig(size=args.input_size, crop_scales=args.crop_scales or AugmentConfig.crop_scales,
                             min_face_size=args.min_face_size, mosaic=args.mosaic,
                             mosaic_grids=args.mosaic_grids), teacher=teacher,
    )


def _run_train(args: argparse.Namespace) -> int:
    from .trainer import train

    result = train(train_config_from_args(args, distill=args.command_kind == "distill"))
    print(f"{result.epochs_done} epochs done in {result.seconds / 60:.1f} min ({result.images_per_second:.1f} img/s); run files in {result.out_dir}")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train a network on WIDER FACE (MultiBoxLoss, AdamW + OneCycle)",
        description="Train a registered network with RetinaFace's recipe. Checkpoints every epoch "
        "(--out/last.pth) and resumes with --resume. Several processes: torchrun --nproc_per_node N "
        "-m featherface.training.cli train ...",
    )
    parser.add_argument("--arch", default=TrainConfig.arch, choices=ARCH_NAMES, help="network variant (default %(default)s)")
    _add_training_options(parser, "runs/train")
    parser.set_defaults(run=_run_train, command_kind="train")
    return parser


def add_distill_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill", help="distil a student (default v2-ultra) from a frozen teacher (default v1)",
        description="Knowledge distillation: total = task x MultiBoxLoss + kd x T^2 KL(teacher || student) "
        "+ feature alignment + attention transfer (+ optional regression towards the teacher), "
        "T(epoch) = range x (1 - epoch / epochs) + min.",
    )
    parser.add_argument("--arch", default=TrainConfig.arch, choices=ARCH_NAMES, help="student variant (default %(default)s)")
    _add_training_options(parser, "runs/distill")
    _add_distill_options(parser)
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="phase table of loss weights and backbone freezing; seed-3phase: 400 epochs in the seed's "
                        "100/200/100 (1: backbone frozen, 2: all trainable, 3: task + KL only; see training/distill_config.py)")
    parser.set_defaults(run=_run_train, command_kind="distill")
    return parser


def _run_ablate(args: argparse.Namespace) -> int:
    from .ablate import ablate, default_runs

    base = train_config_from_args(args, distill=True)
    runs = default_runs(tuple(args.innovations) if args.innovations else None, distillation_off=not args.no_distill_off_run)
    ablate(base, runs, args.out, eval_size=args.eval_size or None, eval_limit=args.eval_limit, latency_size=args.latency_size)
    return 0


def add_ablate_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ablate", help="train v2-ultra variants with one budget and tabulate AP, params, MACs, latency",
        description="Trains the default v2-ultra (distilled), then each innovation flipped from its default in turn, "
        "then the full network without distillation, all with the same settings; evaluates each on "
        "WIDER_val and writes --out/ablation.md, .csv and .json.",
    )
    parser.set_defaults(arch="v2-ultra")
    _add_training_options(parser, "runs/ablate")
    _add_distill_options(parser)
    parser.add_argument("--innovations", nargs="*", choices=INNOVATIONS, help="innovations to ablate (default: all five)")
    parser.add_argument("--no-distill-off-run", action="store_true", help="skip the run without distillation")
    parser.add_argument("--eval-size", type=_size_or_zero, default=DEFAULT_INPUT_SIZE, help="letterbox size for the AP column; 0 = original size (default %(default)s)")
    parser.add_argument("--eval-limit", type=int_at_least(0), default=0, help="validation images per evaluation (default: all)")
    parser.add_argument("--latency-size", type=square_input_size, default=DEFAULT_INPUT_SIZE, help="input size of the MACs and latency columns (default %(default)s)")
    parser.set_defaults(run=_run_ablate, command_kind="ablate")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m featherface.training.cli", description="Train, distil and ablate FeatherFace networks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for add in (add_train_parser, add_distill_parser, add_ablate_parser):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting("python -m featherface.training.cli", lambda: args.run(args),
                         interrupted="interrupted (resume with --resume)")


if __name__ == "__main__":
    sys.exit(main())
