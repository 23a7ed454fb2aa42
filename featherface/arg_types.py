"""argparse `type=` validators shared by `featherface` and `featherface-pi`: a bad option value
is refused at parse time in one line naming the value and what was expected (no torch, no I/O
beyond a stat, so the device SDK can use them)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from featherface.config import MAX_THREADS, InputSize


def score_threshold(text: str) -> float:
    """A face probability threshold in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (a face probability), got {text}")
    return value


def int_at_least(minimum: int, maximum: int | None = None):
    """A validator of integers >= `minimum` (and <= `maximum` when given): counts of runs, threads."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


thread_count = int_at_least(1, MAX_THREADS)  # a number of inference threads


def output_folder(text: str) -> str:
    """A folder to write into: absent (it is created) or an existing directory, never a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file, not a folder: give a folder for the output")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # found now, not after minutes of work
        raise argparse.ArgumentTypeError(f"{text} cannot be created: {blocking} is a file, not a folder")
    return text


def square_input_size(text: str) -> int:
    """A square model input N (N x N), a multiple of the largest prior step."""
    size = input_shape(text)
    if not size.is_square:
        raise argparse.ArgumentTypeError(f"expected one size N (a square input), got {text!r}")
    return size.width


def input_shape(text: str) -> InputSize:
    """A model input size: N (N x N) or WxH (e.g. 640x480), each side a multiple of the largest prior step."""
    try:
        return InputSize.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
