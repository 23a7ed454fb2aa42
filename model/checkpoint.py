"""The one checkpoint loader: untrusted files, known quirks, strict keys, loud mismatches."""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

from featherface.atomic import atomic_path

THOP_SUFFIXES = ("total_ops", "total_params")  # buffers thop leaves in saved state dicts


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message says why."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint, with the `module.` prefix and thop buffers removed.

    Pickles load with `weights_only=True`: a file that asks to run code is refused
    without running it. `.safetensors` files are read with safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # untrusted bytes: every way of failing is a refusal
        raise CheckpointError(f"refused {path}: not a plain tensor checkpoint ({_reason(err)}); nothing in it was executed") from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]  # training archives such as the ImageNet backbone tar
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, expected a state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if key.endswith(THOP_SUFFIXES):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor")
        state[key.removeprefix("module.")] = value
    return state


def _reason(err: Exception) -> str:
    """A short, terminal-safe reason for a refused checkpoint."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it asks to run code ({unsupported.group(1)})"
    if isinstance(err, (EOFError, IndexError)) or "truncat" in text.lower() or "central directory" in text:
        return "truncated or corrupt file"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"truncated or corrupt file: {type(err).__name__}{': ' + first[:120] if first else ''}"


def _likely_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the registered variant whose keys and shapes best match `state`."""
    from .registry import VARIANTS

    best, best_score = None, 0.0
    for name, variant in VARIANTS.items():
        expected = {k: tuple(v.shape) for k, v in variant.build().state_dict().items()}
        same = sum(1 for k, v in state.items() if expected.get(k) == tuple(v.shape))
        score = same / max(len(expected), len(state))
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None


def _mismatch_message(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str | None) -> str | None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if not (missing or unexpected or reshaped):
        return None

    def listing(label: str, keys: list[str]) -> str:
        shown = ", ".join(keys[:6]) + (f" ... (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        return f"\n  {label} ({len(keys)}): {shown}"

    text = f"{path} does not match architecture {arch or type(model).__name__}:"
    text += listing("missing keys", missing) if missing else ""
    text += listing("unexpected keys", unexpected) if unexpected else ""
    text += listing("shape mismatches", [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in reshaped]) if reshaped else ""
    likely = _likely_variant(state)
    if likely and likely != arch:
        text += f"\n  this file most likely belongs to --arch {likely}"
    return text


def load_weights(model: nn.Module, path: str | Path, arch: str | None = None, keep: tuple[str, ...] = ()) -> nn.Module:
    """Load `path` into `model` with strict key and shape matching; refuse NaN/Inf weights.

    keep: entries the model keeps from itself, whether or not the file has them (a
    deliberate transfer, e.g. V2 Ultra's `relu_backbone` when fine-tuning a network that
    was trained with the teacher's LeakyReLU backbone)."""
    path = Path(path)
    state = read_state_dict(path)
    own = model.state_dict()
    state.update({k: own[k] for k in keep if k in own})
    problem = _mismatch_message(model, state, path, arch)
    if problem:
        raise CheckpointError(problem)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN or Inf) in {len(bad)} tensors, e.g. {bad[0]}")
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as err:  # a load hook's refusal, e.g. V2 Ultra's backbone activation
        raise CheckpointError(f"{path}: {err}") from None
    return model


def load_backbone_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ImageNet MobileNetV1-0.25 weights (e.g. mobilenetV1X0.25_imagenet.tar) into `model.body`."""
    path = Path(path)
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    body = getattr(model, "body", None)
    if body is None:
        raise CheckpointError(f"{type(model).__name__} has no MobileNetV1 backbone (`body`)")
    problem = _mismatch_message(body, state, path, "MobileNetV1-0.25 backbone")
    if problem:
        raise CheckpointError(problem)
    body.load_state_dict(state, strict=True)
    return model


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save the state dict atomically: a crash never leaves a half-written checkpoint.

    Written through a file object, so the zip's inner folder is torch's fixed "archive"
    rather than the temporary file's random name: equal weights give equal bytes (and sha256).
    """
    with atomic_path(path) as tmp, tmp.open("wb") as stream:
        torch.save(model.state_dict(), stream)
    return Path(path)
