"""Evaluate a trained run on WIDER_val (both protocols, with reference networks) and write
the MODEL_CARD.md that ships beside embedded weights.

`python -m featherface.training.model_card --run RUN_DIR [--run NEXT_STAGE_DIR] --command ...
--weights model/weights/v2_ultra.pth --out model/weights/MODEL_CARD.md --compare retinaface-mnet025`. Evaluations are cached
in RUN_DIR/evaluations.json, and the card is rewritten after each one, so an interrupted
job loses nothing and a rerun only does what is missing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from featherface.arg_types import thread_count
from featherface.atomic import write_text_atomic
from featherface.config import DEFAULT_INPUT_SIZE, MEAN_BGR, PRIORS, WIDER_EVAL_THRESHOLDS
from featherface.errors import run_reporting
from featherface.paths import WIDERFACE
from featherface.sdk.bundle import sha256_of
from featherface.widerface import WiderAP

from .augment import AugmentConfig
from .run_config import LossConfig

__all__ = ["main", "render_model_card", "run_evaluations"]

# Rows quoted from ../shared/docs/measured.md (same evaluator and images, measured there
# with throw-away commands): the card evaluates only what `--compare` names.
QUOTED_ROWS = {
    "v1": "| v1 (quoted) | 592,371 | 1.244 | 93.7 / 93.3 / 77.1 | 93.2 / 89.8 / 55.3 |",
    "yunet": "| YuNet (OpenCV, quoted) | 75,856 | - | 92.7 / 91.6 / 81.2 | 91.4 / 88.6 / 62.8 |",
}

PROTOCOLS: tuple[int | None, ...] = (None, DEFAULT_INPUT_SIZE)  # original size (the paper's), letterboxed


def _key(arch: str, size: int | None) -> str:
    return f"{arch}@{size or 'original'}"


def run_evaluations(
    entries: list[tuple[str, Path]],
    cache_file: Path,
    widerface_root: Path,
    on_result: Callable[[dict], None],
    progress: Callable[[str], None],
) -> dict:
    """Evaluate each (arch, weights) at both protocols; results cached in `cache_file`."""
    from featherface.model.checkpoint import load_weights
    from featherface.model.profile import count_macs, parameter_counts
    from featherface.model.registry import get_variant

    from .evaluate import evaluate_model

    results = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    for arch, weights in entries:
        model = load_weights(get_variant(arch).build(), weights, arch=arch).eval()
        counts = parameter_counts(model)
        results.setdefault(f"{arch}@info", {
            "weights": str(weights), "params": counts["params"], "params_thop_style": counts["params_thop_style"],
            **count_macs(model, DEFAULT_INPUT_SIZE),
        })
        for size in PROTOCOLS:
            key = _key(arch, size)
            if key in results:
                continue
            progress(f"evaluating {arch} ({'original size' if size is None else f'letterboxed {size}'})")
            results[key] = evaluate_model(model, widerface_root, size, progress=progress).to_json()
            write_text_atomic(cache_file, json.dumps(results, indent=2) + "\n")
            on_result(results)
    return results


def _ap(results: dict, arch: str, size: int | None) -> str:
    cached = results.get(_key(arch, size))
    return WiderAP.from_json(cached).percent() if cached else "not measured"


def _recipe(run: dict, command: str, stage: str) -> list[str]:
    """The recipe lines of one training run (a stage of the card's weights)."""
    config = run["config"]
    teacher = config.get("teacher")
    history = run.get("history", [])
    last = history[-1] if history else {}
    scales = config.get("augment", {}).get("crop_scales") or AugmentConfig.crop_scales
    zoom = [s for s in scales if s > 1]
    mosaic = config.get("augment", {}).get("mosaic", 0.0)
    grids = " or ".join(f"{g}x{g}" for g in config.get("augment", {}).get("mosaic_grids", ()))
    switched = config.get("switched_innovations") or config.get("disabled_innovations")  # the older runs' key
    loss = {**dataclasses.asdict(LossConfig()), **config.get("loss", {})}
    lines = [
        *([f"### {stage}"] if stage else []),
        (f"- started from `{config['init_weights']}`" + (", the previous stage's weights" if stage else "") + "."
         if config.get("init_weights") else "- started from the teacher's backbone and a fresh neck."),
        *([f"- switches flipped from the default network of its day: {', '.join(switched)}."] if switched else []),
        *([f"- a pyramid of {config['channels']} channels (`--channels`): narrower starting weights are widened, "
           "starting as that network."] if config.get("channels") else []),
        f"- input size {config['input_size']}x{config['input_size']} (RetinaFace augmentation: square crops of "
        f"{', '.join(f'{s:g}' for s in scales)} x the short side keeping faces whose centre is inside"
        + ("; crops above 1 zoom out, padding with the mean colour, so faces shrink as in a letterboxed photo" if zoom else "")
        + ", photometric distortion, mirror with left/right landmark swap, resize"
        + (f"; with probability {mosaic:g} a {grids} grid of such crops instead (mosaic)" if mosaic else "")
        + f"), batch {config['batch_size']}, seed {config['seed']}.",
        f"- AdamW (lr {config['lr']:g}, weight decay {config['weight_decay']:g}) with OneCycle "
        f"({config['warmup_fraction']:.0%} warm-up), {config['epochs']} epochs planned, {run['epochs_done']} done"
        + (" (stopped early by the time budget: OneCycle did not finish)" if run["stopped_early"] else "") + ".",
        f"- MultiBoxLoss: match IoU {loss['iou_threshold']:g} (best prior forced per face from IoU {loss['force_min_iou']:g}), "
        f"hard negatives {loss['negative_ratio']}:1, {loss['loc_weight']:g} x loc + {loss['conf_weight']:g} x conf + "
        f"{loss['landmark_weight']:g} x landmarks (smooth L1).",
    ]
    if teacher:
        t = teacher["loss"]
        lines += [
            f"- distilled from teacher `{teacher['arch']}` ({teacher['weights'] or 'its default weights in ../shared/weights'}), "
            f"frozen in eval mode; student backbone initialised from the teacher's MobileNetV1-0.25: {teacher['init_student_backbone']}.",
            f"- total = {t['task_weight']} task + {t['kd_weight']} T^2 KL(teacher || student) on class logits "
            f"({'summed over priors, per expected teacher face prior' if t.get('kd_per') == 'face' else 'averaged over priors'}) + "
            f"{t['feature_weight']} feature alignment + {t['attention_weight']} attention transfer"
            + (f" + {t['landmark_weight']} landmark regression towards the teacher (priors matched to faces)" if t["landmark_weight"] else "")
            + (f" + {t['box_weight']} box regression towards the teacher" if t["box_weight"] else "")
            + f"; T(epoch) = {t['temperature_range']} (1 - epoch / {config['epochs']}) + {t['temperature_min']}.",
        ]
        if t.get("phases"):
            lines.append("- phases (up to epoch: backbone, terms off): " + "; ".join(
                f"{p['end']}: {'frozen' if p['freeze_backbone'] else 'trainable'}, {', '.join(p['terms_off']) or 'none'}" for p in t["phases"]
            ) + ".")
    lines += [
        f"- hardware: {run['processes']} process x {run['threads']} CPU thread(s) of a 2-core machine shared with other jobs; "
        f"training {run['seconds'] / 60:.0f} min at {run['images_per_second']} images/s.",
        f"- final epoch: loss {last.get('loss', float('nan')):.3f} (task {last.get('task', float('nan')):.3f}: loc {last.get('loc', float('nan')):.3f}, "
        f"conf {last.get('conf', float('nan')):.3f}; kd {last.get('kd', float('nan')):.3f}, feature {last.get('feature', float('nan')):.3f}, "
        f"attention {last.get('attention', float('nan')):.3f}, landmark_kd {last.get('landmark_kd', float('nan')):.3f}).",
        f"- reproduce: `{command}`",
    ]
    return lines


def render_model_card(runs: list[dict], results: dict, weights: Path, arch: str, compare: list[str], commands: list[str],
                      notes: tuple[str, ...] = ()) -> str:
    """The card's Markdown from the run summaries (run.json of each stage, in order) and
    the evaluation results."""
    if len(commands) != len(runs):
        raise ValueError(f"one command per run: {len(runs)} runs, {len(commands)} commands")
    run = runs[-1]
    config = run["config"]
    teacher = config.get("teacher")
    first_teacher = runs[0]["config"].get("teacher")
    data = run["data"]
    size_bytes = weights.stat().st_size
    digest = sha256_of(weights)
    info = results.get(f"{arch}@info", {})
    minutes = sum(r["seconds"] for r in runs) / 60
    eval_minutes = sum(v.get("seconds", 0) for k, v in results.items() if k.startswith(f"{arch}@") and "seconds" in v) / 60

    events = data.get("events", {})
    event_text = ", ".join(f"{e} ({n} images)" for e, n in sorted(events.items())) or "see run.json"

    rows = []
    for name in [arch, *compare]:
        model_info = results.get(f"{name}@info", {})
        label = f"**{name}** (this file)" if name == arch else name
        params = f"{model_info['params']:,}" if model_info else "?"
        macs = f"{model_info['macs'] / 1e9:.3f}" if model_info else "?"
        rows.append(f"| {label} | {params} | {macs} | {_ap(results, name, None)} | {_ap(results, name, DEFAULT_INPUT_SIZE)} |")

    several = len(runs) > 1
    recipe = [line for i, (r, c) in enumerate(zip(runs, commands), start=1)
              for line in _recipe(r, c, f"Stage {i} of {len(runs)}" if several else "")]
    lines = [
        f"# Model card: `{weights.name}` ({arch})",
        "",
        f"The default weights that `create_model(\"{arch}\")` and `featherface ... --arch {arch}` load. "
        f"A short-budget {'distillation' if teacher else 'training'} on a {data['used_images']:,}-image WIDER FACE subset on a 2-core CPU"
        + (f", its backbone started from the teacher's ({first_teacher['arch']}, trained on all of WIDER FACE)"
           if first_teacher and first_teacher["init_student_backbone"] else "")
        + ". Not a substitute for training on the full WIDER FACE train set.",
        "",
        "## File",
        f"- state dict only, {size_bytes:,} bytes, sha256 `{digest}`",
        f"- parameters: {info.get('params', '?'):,} (true count), {info.get('params_thop_style', '?'):,} (thop-style); "
        f"MACs at {DEFAULT_INPUT_SIZE}x{DEFAULT_INPUT_SIZE}: {info.get('macs', 0) / 1e9:.3f} G" if info else "- parameters: see `featherface info`",
        f"- input: BGR, mean ({', '.join(f'{v:g}' for v in MEAN_BGR)}) subtracted, no scaling, NCHW (the one preprocessing of the SDK); "
        "outputs loc [N, A, 4], conf [N, A, 2] (softmax in eval mode), landmarks [N, A, 10]; priors as in `featherface.config.PRIORS`.",
        "",
        "## Data",
        f"- training: {data['source']}; {data['used_images']:,} of {data['images']:,} images used, {data['faces']:,} faces kept, "
        f"{data['dropped_invalid']} invalid and {data['dropped_zero_size']} zero-size boxes dropped; "
        f"events: {event_text}. No landmark annotations (official WIDER ground truth).",
        "- validation (below): the 315 WIDER_val images of ../shared (3 events), scored with the official "
        "easy/medium/hard ground truth restricted to those images. Not comparable with full-val figures.",
        "- licence of the data: WIDER FACE terms (non-commercial research).",
        "",
        "## WIDER_val AP in points (easy / medium / hard)",
        f"Same evaluator (`featherface.training.evaluate`, official protocol: confidence > {WIDER_EVAL_THRESHOLDS.score:g}, "
        f"NMS {WIDER_EVAL_THRESHOLDS.nms_iou:g}, no top-k) and the same 315 images for every row. Original size = the paper's "
        f"protocol; letterboxed {DEFAULT_INPUT_SIZE} = the SDK's default input.",
        "",
        f"| network | params | GMACs @{DEFAULT_INPUT_SIZE} | original size | letterboxed {DEFAULT_INPUT_SIZE} |",
        "|---|---:|---:|---|---|",
        *rows,
        *(row for name, row in QUOTED_ROWS.items() if name not in compare),
        "",
        "The reference rows use the public checkpoints of ../shared (trained on all of WIDER FACE for hundreds of epochs). "
        "Rows marked quoted come from ../shared/docs/measured.md (same evaluator and images); YuNet ran through OpenCV's "
        "`FaceDetectorYN` (score 0.02, NMS 0.45), its frame resized to longer side 640 rather than letterboxed.",
        "",
        "## What it is not good at",
        f"- Small faces (the *hard* column): faces below the smallest {min(PRIORS.min_sizes[0])} px prior are rarely found."
        + ("" if config["input_size"] >= DEFAULT_INPUT_SIZE else f" Trained on {config['input_size']} px crops, where many shrink below it."),
        f"- Accuracy in general: {data['used_images']:,} photos of {len(events) or 'a few'} WIDER FACE train events (the full set: 12,880 "
        "of 61); expect lower AP than the teacher. Retrain on the full set before judging the architecture.",
        ("- Landmarks: learnt only from the teacher's predictions (WIDER's official ground truth has none); "
         "not evaluated. Use them for alignment at your own risk."
         if teacher and teacher["loss"]["landmark_weight"] else
         "- Landmarks: not trained (WIDER's official ground truth has none): ignore them."),
        f"- Crowds, heavy occlusion, extreme poses and events absent from the {len(events) or 'few'} training events.",
        "- Calibration: scores are not probabilities; pick the deployment threshold on your own data.",
        "",
        "## Recipe",
        f"Training took {minutes:.0f} min in all" + (f" ({len(runs)} stages)" if several else "")
        + f"; evaluating this file {eval_minutes:.0f} min.",
        *notes,
        "",
        *recipe,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featherface.training.model_card", description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True,
                        help="run directory with run.json; repeat for each stage, in order (evaluations are cached in the last)")
    parser.add_argument("--weights", required=True, help="the trained weights the card describes")
    parser.add_argument("--arch", default="v2-ultra", help="their architecture (default %(default)s)")
    parser.add_argument("--out", required=True, help="where MODEL_CARD.md goes")
    parser.add_argument("--compare", nargs="*", default=["v1", "retinaface-mnet025"], help="reference variants, default weights")
    parser.add_argument("--data", default=str(WIDERFACE), help="WIDER FACE root (default %(default)s)")
    parser.add_argument("--threads", type=thread_count, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--command", action="append", default=[], help="each stage's training command, quoted in the card (one per --run)")
    parser.add_argument("--note", action="append", default=[], help="a sentence for the recipe section (repeatable)")
    args = parser.parse_args(argv)
    if len(args.command) != len(args.run):
        parser.error(f"give one --command per --run ({len(args.run)} runs, {len(args.command)} commands)")
    return run_reporting(parser.prog, lambda: _write_card(args))


def _read_run(run_dir: Path) -> dict:
    """A stage's run.json; ValueError naming the file when it is missing or not a run summary."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (--run takes a directory written by `featherface distill --out`)")
    try:
        run = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    missing = [key for key in ("config", "data", "seconds") if not isinstance(run, dict) or key not in run]
    if missing:
        raise ValueError(f"{path}: not a run summary (missing {', '.join(missing)})")
    return run


def _write_card(args: argparse.Namespace) -> int:
    from featherface.model.registry import get_variant

    run_dirs, weights, out = [Path(r) for r in args.run], Path(args.weights), Path(args.out)
    runs = [_read_run(d) for d in run_dirs]
    if not weights.is_file():
        raise ValueError(f"{weights}: no such weights file")
    for name in [args.arch, *args.compare]:
        get_variant(name)  # an unknown name fails here, before any evaluation
    torch.set_num_threads(args.threads)
    run_dir = run_dirs[-1]

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def write(results: dict) -> None:
        write_text_atomic(out, render_model_card(runs, results, weights, args.arch, args.compare, args.command, tuple(args.note)))
        progress(f"wrote {out}")

    entries = [(args.arch, weights)]
    for name in args.compare:
        default = get_variant(name).find_default_weights()
        if default is None:
            progress(f"skipping {name}: no default weights here")
            continue
        entries.append((name, default))
    results = run_evaluations(entries, run_dir / "evaluations.json", Path(args.data), write, progress)
    write(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
