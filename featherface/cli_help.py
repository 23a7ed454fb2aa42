"""Example command lines at the end of every `--help` (issue 19): one place, so a new
subcommand gets its examples here and a test checks that none is missing."""
from __future__ import annotations

import argparse

EXAMPLES: dict[str, tuple[str, ...]] = {
    "info": ("featherface info --arch v2-ultra",
             "featherface info --arch v1 --weights ../shared/weights/featherface_v1_paper.pth --json"),
    "convert": ("featherface convert onnx --arch retinaface-mnet025 --weights ../shared/weights/retinaface_mnet025.pth --out converted",),
    "build": ("featherface build --target all --arch v2-ultra --out dist",
              "featherface build --target pi4 --arch retinaface-mnet025 --weights ../shared/weights/retinaface_mnet025.pth "
              "--input-size 320 --out dist_rf"),
    "detect": ("featherface detect --bundle dist/pi4 photo.jpg --json",
               "featherface detect --bundle dist/pi4 photos/ --out annotated/ --score 0.7 --file model_fp16.tflite"),
    "eval": ("featherface eval --bundle dist/pi4 --data ../shared/data/widerface --out predictions/pi4",
             "featherface eval --arch v1 --weights ../shared/weights/featherface_v1_paper.pth --data ../shared/data/widerface "
             "--origin-size --out predictions/v1",
             "featherface eval --arch v2-ultra --data ../shared/data/widerface --out predictions/v2 --by-event",
             "featherface eval --bundle dist/pi4 --data ../shared/data/widerface --out predictions/pi4 --against predictions/v2"),
    "report": ("featherface report dist", "featherface report dist/pi4"),
    "bench": ("featherface bench dist/pi4 --threads 1,4 --out bench",
              "featherface bench dist/pi4/model_fp16.tflite dist/pi4/model_int8.tflite --baseline model_int8.tflite"),
    "train": ("featherface train --arch v2-ultra --data ../shared/data/widerface/WIDER_train --epochs 2 --out runs/train",),
    "distill": ("featherface distill --data ../shared/data/widerface/WIDER_train --epochs 2 --out runs/distill",),
    "ablate": ("featherface ablate --data ../shared/data/widerface/WIDER_train --epochs 2 --max-images 400 --out runs/ablate",),
    "featherface-pi": ("featherface-pi --bundle dist/pi4 --source camera --threads 4",
                       "featherface-pi --bundle dist/pi4 --source photos/ --save annotated/ --json"),
}


class ExamplesFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that the examples epilog keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def add_examples(parser: argparse.ArgumentParser, name: str) -> None:
    """End `parser`'s --help with the examples of command `name`."""
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    parser.formatter_class = ExamplesFormatter


def add_examples_to_commands(commands: argparse._SubParsersAction) -> None:
    for name, parser in commands.choices.items():
        if name in EXAMPLES:  # tests/test_help_examples.py fails for a command without examples
            add_examples(parser, name)
