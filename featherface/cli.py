"""The `featherface` command: thin argument parsing over the library; heavy imports are lazy.

Every failure the user can cause ends as one `featherface: error: ...` line on stderr and
exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from . import __version__
from .arg_types import input_shape, output_folder, score_threshold, square_input_size, thread_count
from .cli_help import add_examples_to_commands
from .config import (
    CALIBRATION_IMAGES,
    DEFAULT_INPUT_SIZE,
    DEPLOY_THRESHOLDS,
    INT8_AP_BUDGET,
    ORIENTATIONS,
    PARITY_IMAGES,
    PRIORS,
    QUANTIZERS,
    TARGET_SPECS,
    TARGETS,
    WIDER_EVAL_THRESHOLDS,
    InputSize,
)
from .errors import EXPECTED, run_reporting

if TYPE_CHECKING:
    from .widerface import WiderAP


class UsageError(Exception):
    """Bad input named by the user (file, option value); reported without a traceback."""


def _cmd_info(args: argparse.Namespace) -> int:
    from .model.checkpoint import load_backbone_weights, load_weights
    from .model.profile import describe
    from .model.registry import get_variant

    variant = get_variant(args.arch)
    model = variant.build()
    weights = args.weights or variant.find_default_weights()
    if weights is not None:
        load_weights(model, weights, arch=args.arch)
    if args.backbone_weights:
        load_backbone_weights(model, args.backbone_weights)
    info = {
        "arch": args.arch,
        "description": variant.description,
        **describe(model, args.input_size),
        "weights": str(weights) if weights else None,
        "weights_loaded": weights is not None,
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['arch']}: {info['description']}")
    print(f"  parameters        {info['params']:>13,}  (true count)")
    print(f"  parameters (thop) {info['params_thop_style']:>13,}  (paper's way: no DCN main weights, no BiFPN fusion scalars)")
    print(f"  MACs @{args.input_size:<4}        {info['macs']:>13,}  (thop-style {info['macs_thop_style']:,})")
    for name, count in info["components"].items():
        print(f"    {name:<15} {count:>13,}")
    print(f"  weights           {info['weights'] or 'none (random initialisation)'}")
    return 0


def _load_model(args: argparse.Namespace):
    """The network of `--arch` with `--weights` (default: the variant's default weights)."""
    from .model.checkpoint import load_weights
    from .model.registry import get_variant

    variant = get_variant(args.arch)
    weights = Path(args.weights) if args.weights else variant.find_default_weights()
    if weights is None:
        raise UsageError(f"--arch {args.arch} has no default weights here; pass --weights PATH")
    model = variant.build()
    load_weights(model, weights, arch=args.arch)
    return model.eval(), weights


def _progress(prefix: str) -> Callable[[str], None]:
    start = time.perf_counter()
    return lambda message: print(f"[{time.perf_counter() - start:6.1f}s] {prefix}: {message}", file=sys.stderr, flush=True)


def _parity_set(args: argparse.Namespace, model):
    from .converters.build import find_images, make_parity_set
    from .paths import default_parity_images

    images = Path(args.images) if args.images else default_parity_images()
    if images is None:
        raise UsageError("no parity images: pass --images DIR (real face photos)")
    return make_parity_set(model, find_images(images, PARITY_IMAGES), args.input_size)


def _ap_budget(text: str):
    """argparse type: 'E,M,H' AP points allowed to be lost on easy, medium, hard."""
    from .quantization.accuracy import APBudget

    try:
        easy, medium, hard = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers E,M,H (AP points), got {text!r}") from None
    if not all(0 <= v < math.inf for v in (easy, medium, hard)):
        raise argparse.ArgumentTypeError(f"AP budgets must be finite and not negative, got {text!r}")
    return APBudget(easy, medium, hard)


def _int8_options(args: argparse.Namespace, targets: Sequence[str]):
    """How to make the pi4 INT8 files (None when no pi4 bundle is built or --no-int8)."""
    from .paths import WIDERFACE
    from .quantization.accuracy import APBudget
    from .quantization.pipeline import Int8Options

    if "pi4" not in targets or args.no_int8:
        return None
    calibration = Path(args.calib) if args.calib else WIDERFACE / "WIDER_train"
    if not calibration.is_dir():
        raise UsageError(f"no calibration images at {calibration}: pass --calib DIR (images, or a WIDER FACE root), or --no-int8")
    if args.calib_images < 1:
        raise UsageError(f"--calib-images must be at least 1, got {args.calib_images}")
    if args.int8_io and args.quantizer != "onnx2tf":
        raise UsageError("--int8-io is an onnx2tf option: ai-edge-quantizer always gives INT8 input and outputs")
    return Int8Options(calibration, args.calib_images, "tensor" if args.per_tensor else "channel", not args.no_equalize,
                       args.ap_budget or APBudget(), args.quantizer, "int8" if args.int8_io else "float32")


def _coreml_compression(args: argparse.Namespace, targets: Sequence[str]):
    """The optional a14 files (None when none is asked for)."""
    if not (args.palettize or args.coreml_a8w8):
        return None
    from .converters.coreml_export import Compression
    from .paths import WIDERFACE

    if "a14" not in targets:
        raise UsageError("--palettize and --coreml-a8w8 make a14 files: use them with --target a14 or all")
    calibration = None
    if args.coreml_a8w8:
        calibration = Path(args.calib) if args.calib else WIDERFACE / "WIDER_train"
        if not calibration.is_dir():
            raise UsageError(f"no calibration images at {calibration} for --coreml-a8w8: pass --calib DIR")
    return Compression(palettize=args.palettize, a8w8=args.coreml_a8w8, calibration=calibration)


def _accuracy_check(args: argparse.Namespace, model):
    """WIDER FACE AP of every file (None with --no-eval or without validation data)."""
    from .paths import WIDERFACE
    from .quantization.accuracy import AccuracyCheck

    if args.no_eval:
        return None
    data = Path(args.eval_data) if args.eval_data else WIDERFACE
    if not (data / "WIDER_val" / "images").is_dir():
        if args.eval_data:
            raise UsageError(f"--eval-data {data} has no WIDER_val/images")
        print(f"featherface: no WIDER FACE validation data at {data}: AP not measured, the INT8 budget not "
              "checked (pass --eval-data)", file=sys.stderr)
        return None
    return AccuracyCheck(data, model, args.input_size)


def _cmd_build(args: argparse.Namespace) -> int:
    from .converters.build import TARGETS, build_bundle, output_lock, print_table
    from .quantization.mixed_precision import BudgetNotMet

    model, weights = _load_model(args)
    targets = TARGETS if args.target == "all" else (args.target,)
    int8 = _int8_options(args, targets)
    compression = _coreml_compression(args, targets)
    out = Path(args.out)
    manifests = []
    parity = _parity_set(args, model)  # before --out exists: an unreadable image leaves nothing behind
    with output_lock(out):
        accuracy = _accuracy_check(args, model)
        try:
            for target in targets:
                manifests.append(build_bundle(target, model, args.arch, weights, parity, args.input_size, out, _progress(target),
                                              int8=int8, accuracy=accuracy, compression=compression))
        except BudgetNotMet as err:
            raise UsageError(f"{err}; allow a larger loss with --ap-budget E,M,H, or build without full INT8: --no-int8") from None
        if len(targets) > 1:  # one report over the bundles just built (and any others in --out)
            from .converters.report import write_report

            write_report(out, _progress("report"))
    for manifest in manifests:
        print_table(manifest, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"out": str(out), "bundles": [manifest.to_json() for manifest in manifests]}))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .atomic import staging_directory
    from .converters.build import BuildError, check_file, output_lock
    from .converters.export import ExportRequest, exporters
    from .converters.manifest import embedded_metadata, new_manifest

    if args.fp16 and args.format == "onnx":
        raise UsageError("--fp16 is for tflite and coreml; the onnx file is FP32")
    model, weights = _load_model(args)
    target = next(t.name for t in TARGET_SPECS.values() if t.format == args.format)
    out = Path(args.out)
    parity = _parity_set(args, model)  # bad images fail before --out is created
    with output_lock(out):
        metadata = embedded_metadata(new_manifest(target, args.arch, weights, args.input_size, TARGET_SPECS[target].layout))
        scratch = out / f".convert-{args.format}"
        with staging_directory(scratch) as stage:
            files = exporters()[target](ExportRequest(model, stage, args.input_size, metadata, _progress(args.format)))
            wanted = {"onnx": {"fp32"}, "tflite": {"fp16"} if args.fp16 else {"fp32"}, "coreml": {"fp16"} if args.fp16 else {"fp32"}}[args.format]
            files = [f for f in files if f.precision in wanted and not f.image_input]
            for model_file in files:
                record = check_file(model_file, parity, args.input_size)
                if not record.passed:
                    raise BuildError(f"{model_file.path.name}: parity failed: " + "; ".join(record.reasons))
                detections = record.detections
                final = out / model_file.path.name
                if final.is_dir():
                    shutil.rmtree(final)
                os.replace(model_file.path, final)
                print(f"{final}  parity pass: max error {record.max_abs_error:.2e}, "
                      f"recall {detections.recall:.3f}, precision {detections.precision:.3f}")
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from .sdk.detect_command import run_detect

    return run_detect(args.bundle, args.inputs, as_json=args.json, out_dir=args.out, score=args.score,
                      file=args.file, runtime=args.runtime, threads=args.threads)


def _eval_detect_fn(args: argparse.Namespace):
    """(detect function, protocol name, what was evaluated) for `featherface eval`."""
    from .config import WIDER_EVAL_THRESHOLDS
    from .evaluation import detector_detect_fn, protocol_name

    if args.bundle:
        from .sdk.detector import Detector

        if args.origin_size:
            raise UsageError("a bundle has a fixed input size: --origin-size needs --arch (the torch network)")
        if args.weights:
            raise UsageError("--weights is for --arch (the torch network); a bundle's files carry their weights")
        detector = Detector.load(args.bundle, file=args.file)
        size = detector.spec.input_size
        if args.input_size and args.input_size != size:
            raise UsageError(f"the bundle's input size is {size}, not --input-size {args.input_size}")
        return detector_detect_fn(detector), protocol_name(size), {"bundle": args.bundle, "file": detector.model_file}
    if not args.arch:
        raise UsageError("pass --arch NAME (torch network) or --bundle DIR")
    if args.file:
        raise UsageError("--file picks a bundle's model file: it needs --bundle, not --arch")
    from .training.evaluate import detect_for_eval

    model, weights = _load_model(args)
    size = None if args.origin_size else (args.input_size or InputSize.of(DEFAULT_INPUT_SIZE))
    return (lambda rgb: detect_for_eval(model, rgb, size, WIDER_EVAL_THRESHOLDS)), protocol_name(size), {
        "arch": args.arch, "weights": str(weights)}


def _ap_text(ap: WiderAP) -> str:
    """People read AP in percent with one decimal, as the report does; the JSON keeps fractions."""
    return f"AP easy {100 * ap.easy:.1f} %, medium {100 * ap.medium:.1f} %, hard {100 * ap.hard:.1f} %"


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_detector
    from .progress_bar import count_bar

    detect, protocol, subject = _eval_detect_fn(args)
    with count_bar("eval", "image", enabled=not args.quiet) as on_image:
        result = evaluate_detector(detect, args.data, args.out, orientation=args.orientation, by_event=args.by_event,
                                   against=args.against, progress=None if args.quiet else _progress("eval"),
                                   on_image=on_image)
    faces = result.faces
    which = f", {args.orientation} photos" if args.orientation else ""
    human = sys.stderr if args.json else sys.stdout
    print(f"WIDER FACE val ({protocol}{which}, {result.images} images; faces easy {faces['easy']}, medium "
          f"{faces['medium']}, hard {faces['hard']}): {_ap_text(result)} ({result.seconds:.0f} s)", file=human)
    for event, ap in (result.events or {}).items():
        print(f"  {event} ({ap.images} images, hard faces {ap.faces['hard']}): {_ap_text(ap)}", file=human)
    if result.against:
        print(f"minus {args.against}, points with the {result.against.confidence:.0%} interval of a paired bootstrap "
              f"over the images: {result.against.percent()}", file=human)
    if args.json:
        print(json.dumps({**replace(result, protocol=protocol).to_json(), **subject,
                          **({"orientation": args.orientation} if args.orientation else {})}))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .converters.report import write_report

    for path in write_report(Path(args.dir), _progress("report")):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .model_names import ARCH_NAMES
    from .sdk.runtimes import RUNTIMES

    parser = argparse.ArgumentParser(
        prog="featherface",
        description="Convert, verify and run FeatherFace face detectors on phones and small boards.",
    )
    parser.add_argument("--version", action="version", version=f"featherface {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    info = commands.add_parser(
        "info", help="parameter counts, MACs and per-component sizes of a network",
        description="Print parameters (true and thop-style), MACs and per-component parameter "
        "counts of a registered network, optionally with its weights loaded strictly.",
    )
    info.add_argument("--arch", required=True, choices=ARCH_NAMES, help="network variant")
    info.add_argument("--weights", help="checkpoint to load strictly (default: the variant's default weights when present)")
    info.add_argument("--backbone-weights", help="ImageNet MobileNetV1-0.25 weights to load into the backbone")
    info.add_argument("--input-size", type=square_input_size, default=DEFAULT_INPUT_SIZE, help="square input size for MACs (default %(default)s)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_cmd_info)

    def model_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--arch", required=True, choices=ARCH_NAMES, help="network variant")
        command.add_argument("--weights", help="checkpoint, loaded strictly (default: the variant's default weights)")
        command.add_argument("--input-size", type=input_shape, default=InputSize.of(DEFAULT_INPUT_SIZE),
                             help="input size: N (N x N) or WxH, e.g. 640x480 for 4:3 camera frames; "
                             f"each a multiple of {max(PRIORS.steps)} (default %(default)s)")
        command.add_argument("--images", help="real face images for the parity check (default: ../shared WIDER_val images)")
        command.add_argument("--out", required=True, help="output directory")

    convert = commands.add_parser(
        "convert", help="convert a network to one format (parity-checked file, no bundle)",
        description="Export one format and check the file against PyTorch on real images; the file "
        "is written to --out only when it passes.",
    )
    convert.add_argument("format", choices=[t.format for t in TARGET_SPECS.values()], help="output format")
    model_options(convert)
    convert.add_argument("--fp16", action="store_true", help="FP16 instead of FP32 (tflite, coreml)")
    convert.set_defaults(run=_cmd_convert)

    build = commands.add_parser(
        "build", help="build verified deployment bundles (onnx, pi4, a14 or all)",
        description="Build one bundle per target under --out: model files, manifest.json, golden "
        "vectors and a parity report. A bundle is moved into place only when every file passed.",
    )
    build.add_argument("--target", required=True, choices=(*TARGETS, "all"), help="deployment target")
    model_options(build)
    build.add_argument("--json", action="store_true", help="print the manifests as one JSON object (tables go to stderr)")
    quant = build.add_argument_group("pi4 INT8")
    quant.add_argument("--calib", help="calibration images: a folder, or a WIDER FACE root (its train split; default: ../shared WIDER_train)")
    quant.add_argument("--calib-images", type=int, default=CALIBRATION_IMAGES, help="calibration images, spread evenly over the folder (default %(default)s)")
    quant.add_argument("--per-tensor", action="store_true", help="per-tensor INT8 weight scales (default: per channel)")
    quant.add_argument("--no-equalize", action="store_true", help="skip cross-layer equalization of the backbone")
    quant.add_argument("--ap-budget", type=_ap_budget, default=None, metavar="E,M,H",
                       help="AP points full INT8 may lose against PyTorch on easy, medium, hard (default %s)" % ",".join(str(v) for v in INT8_AP_BUDGET.values()))
    quant.add_argument("--quantizer", choices=QUANTIZERS, default=QUANTIZERS[0],
                       help="full-INT8 tool (default %(default)s: better AP, and mixed precision when the budget needs it)")
    quant.add_argument("--int8-io", action="store_true", help="INT8 input and output tensors with --quantizer onnx2tf (ai-edge-quantizer's are always INT8)")
    quant.add_argument("--no-int8", action="store_true", help="FP32 and FP16 only")
    a14 = build.add_argument_group("a14 compression")
    a14.add_argument("--palettize", action="store_true",
                     help="also write model_p6.mlpackage: 6-bit k-means palettized weights, from model_fp16 (iOS 16)")
    a14.add_argument("--coreml-a8w8", action="store_true",
                     help="experimental: also write model_a8w8.mlpackage, INT8 activations and weights (iOS 17), calibrated "
                     "on --calib images; no faster than FP16 on an A14")
    accuracy = build.add_argument_group("accuracy")
    accuracy.add_argument("--eval-data", help="WIDER FACE root whose WIDER_val images measure every file's AP (default: ../shared)")
    accuracy.add_argument("--no-eval", action="store_true", help="parity only: no WIDER FACE AP (the INT8 budget is then not checked)")
    build.set_defaults(run=_cmd_build)

    detect = commands.add_parser(
        "detect", help="detect faces with a bundle in images, folders or videos",
        description="Run a bundle's model over images, folders (recursively) or video files. With "
        "--json, one JSON object per image or frame on stdout; a summary goes to stderr. A bad "
        "file is reported and skipped; the exit status is 1 when any input failed.",
    )
    detect.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder or video file")
    detect.add_argument("--bundle", required=True, help="bundle directory (has manifest.json)")
    detect.add_argument("--json", action="store_true", help="print one JSON object per image or frame")
    detect.add_argument("--out", type=output_folder, help="write annotated images into this folder (created if absent)")
    detect.add_argument("--score", type=score_threshold, default=None, help=f"score threshold in [0, 1] (default: the bundle's, {DEPLOY_THRESHOLDS.score} when built here)")
    detect.add_argument("--file", help="model file of the bundle (default: its preferred one)")
    detect.add_argument("--runtime", choices=tuple(runtime.name for runtime in RUNTIMES),
                        help="force a runtime (torch: the PyTorch reference, from the variant's default weights)")
    detect.add_argument("--threads", type=thread_count, default=None, help="inference threads, >= 1 (default: the runtime's)")
    detect.set_defaults(run=_cmd_detect)

    evaluate = commands.add_parser(
        "eval", help="WIDER FACE Easy/Medium/Hard AP of a network or a bundle's file",
        description="Run a torch network (--arch) or a bundle's model file (--bundle) over the "
        "WIDER FACE validation images, write predictions in the standard layout and print the "
        "official Easy/Medium/Hard AP of exactly the images given "
        f"(confidence {WIDER_EVAL_THRESHOLDS.score}, NMS {WIDER_EVAL_THRESHOLDS.nms_iou}).",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--arch", choices=ARCH_NAMES, help="torch network variant")
    source.add_argument("--bundle", help="bundle directory")
    evaluate.add_argument("--weights", help="checkpoint for --arch (default: the variant's default weights)")
    evaluate.add_argument("--file", help="model file of the bundle (default: its preferred one)")
    evaluate.add_argument("--data", required=True, help="WIDER FACE root (WIDER_val/images, wider_face_split/, ground_truth/)")
    size = evaluate.add_mutually_exclusive_group()
    size.add_argument("--origin-size", action="store_true", help="the paper's protocol: each image at its original size")
    size.add_argument("--input-size", type=input_shape, default=None, help=f"letterbox into N x N or WxH (default: {DEFAULT_INPUT_SIZE}, or the bundle's)")
    evaluate.add_argument("--out", required=True, help="prediction directory (<event>/<name>.txt)")
    evaluate.add_argument("--orientation", choices=ORIENTATIONS, default=None,
                          help="only the photos wider than tall (landscape) or taller than wide (portrait); default: all")
    evaluate.add_argument("--by-event", action="store_true",
                          help="also the AP of each WIDER event (image folder) alone: shows whether a gap sits in scenes absent from training")
    evaluate.add_argument("--against", metavar="PREDICTIONS",
                          help="an earlier eval's --out on the same images: also print this AP minus that one, with a 95 %% "
                          "interval from a paired bootstrap over the images (is a difference more than the photos' luck?)")
    evaluate.add_argument("--json", action="store_true", help='print {"easy", "medium", "hard", "images", ...} as the last line')
    evaluate.add_argument("--quiet", action="store_true",
                          help="no progress (default: a bar with the time left on a terminal, else a line every 50 images)")
    evaluate.set_defaults(run=_cmd_eval)

    report = commands.add_parser(
        "report", help="parity report (Markdown, JSON, HTML) of a bundle or a directory of bundles",
        description="Re-run every file of a bundle on its golden images and write parity.md, "
        "parity.json and a self-contained parity.html into it; for a directory of bundles "
        "(such as dist/), one combined report.md, report.json and report.html in it.",
    )
    report.add_argument("dir", metavar="DIR", help="bundle directory, or a directory of bundles")
    report.set_defaults(run=_cmd_report)

    from .bench.cli import add_bench_arguments
    from .bench.cli import run as run_bench

    bench = commands.add_parser(
        "bench", help="latency, memory and parity of bundles or files on this device",
        description="Time each model file (model alone and the whole detect) at several thread "
        "counts, interleaved, check it against the bundle's golden PyTorch outputs, and write a "
        "device report. Also runs as `python -m featherface.bench` with only the SDK installed.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(run=run_bench)

    # Training needs torch; its parsers are light to import (torch loads when a command runs).
    from .training.cli import add_ablate_parser, add_distill_parser, add_train_parser

    add_train_parser(commands)
    add_distill_parser(commands)
    add_ablate_parser(commands)
    add_examples_to_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The commands report their own progress; the converters' tqdm bars (coremltools,
    # onnx2tf, ai-edge-quantizer) would flood it. tqdm reads this when first imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run_reporting("featherface", lambda: run(args), (UsageError, *EXPECTED))


if __name__ == "__main__":
    sys.exit(main())
