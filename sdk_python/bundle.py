"""Read and verify a bundle's manifest: a bundle is untrusted input on a device.

Refused: an unknown format version, a missing, unknown or mistyped field (nested ones
too: the table of what the SDK reads is below), a file path that leaves the bundle (`..`,
absolute, or a symlink pointing out), a missing file, and a file whose sha256 differs
from the manifest's (tampered or truncated).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

from featherface.config import OUTPUT_NAMES

SUPPORTED_VERSIONS = (1,)


def _is(*types: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, types) and (bool in types or not isinstance(v, bool))


def _list_of(check: Callable[[Any], bool], length: int | None = None, empty: bool = True) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, list) and (empty or bool(v)) and length in (None, len(v)) and all(map(check, v)))


# Per object of the manifest: key -> (check, what is expected, for the message). Every key
# is required and no other is allowed, except where a table is marked open below.
Rules = dict[str, tuple[Callable[[Any], bool], str]]
STRING = (_is(str), "a string")
INTEGER = (_is(int), "an integer")
NUMBER = (_is(int, float), "a number")
OBJECT = (_is(dict), "an object")
SHA256 = (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits")
MANIFEST: Rules = {
    "format_version": INTEGER, "target": STRING, "arch": STRING,
    "checkpoint": (lambda v: v is None or isinstance(v, dict), "null or an object"),
    "input": OBJECT, "priors": OBJECT, "thresholds": OBJECT, "tools": OBJECT,
    "outputs": (_list_of(_is(dict), empty=False), "a non-empty list of objects"),
    "files": (_list_of(_is(dict), empty=False), "a non-empty list of objects"),
    "preferred_file": STRING,
    "golden": (lambda v: v is None or isinstance(v, dict), "null or an object"),  # the bench checks inside
}
MANIFEST_FIELDS = set(MANIFEST)
OPTIONAL_FIELDS: Rules = {"reference_accuracy": OBJECT}  # WIDER FACE AP of PyTorch, when the build measured it
SECTIONS: dict[str, Rules] = {
    "input": {
        "name": STRING, "height": INTEGER, "width": INTEGER, "layout": STRING, "dtype": STRING,
        "channel_order": STRING, "mean": (_list_of(_is(int, float), 3), "3 numbers"), "scale": NUMBER, "resize": STRING,
    },
    "priors": {
        "min_sizes": (_list_of(_list_of(_is(int), empty=False), empty=False), "a list of lists of integers"),
        "steps": (_list_of(_is(int), empty=False), "a list of integers"),
        "variances": (_list_of(_is(int, float), 2), "2 numbers"),
        "clip": (_is(bool), "true or false"),
    },
    "thresholds": {"score": NUMBER, "nms_iou": NUMBER, "top_k": INTEGER},
}
CHECKPOINT: Rules = {"name": STRING, "sha256": SHA256}
OUTPUT: Rules = {"name": STRING, "shape": (_list_of(_is(int), empty=False), "a list of integers")}
# Open: a files[] entry also holds the build's records (parity, quantization, accuracy),
# which the SDK does not read; the keys it does read are checked.
FILE_ENTRY: Rules = {
    "file": STRING, "sha256": SHA256,
    "output_map": (lambda v: isinstance(v, dict) and all(isinstance(t, str) for t in v.values()), "an object of tensor names"),
}
FILE_ENTRY_OPTIONAL: Rules = {"format": STRING, "precision": STRING, "size_bytes": INTEGER, "input": OBJECT}


class BundleError(ValueError):
    """A bundle that cannot be trusted or used; the message names the file and the problem."""


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory (an .mlpackage) over its sorted files' names and bytes.

    Must agree with featherface.converters.manifest.sha256_of, which wrote the manifest.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle_dir: str | Path) -> dict:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a bundle: no manifest.json")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise BundleError(f"{path}: format_version {version!r} is not supported (this SDK reads {SUPPORTED_VERSIONS})")
    _check(path, "", manifest, MANIFEST, OPTIONAL_FIELDS)
    for section, rules in SECTIONS.items():
        _check(path, section, manifest[section], rules)
    if manifest["checkpoint"] is not None:
        _check(path, "checkpoint", manifest["checkpoint"], CHECKPOINT)
    for i, output in enumerate(manifest["outputs"]):
        _check(path, f"outputs[{i}]", output, OUTPUT)
    names = sorted(output["name"] for output in manifest["outputs"])
    if names != sorted(OUTPUT_NAMES):
        raise BundleError(f"{path}: `outputs` are {names}; this SDK reads {sorted(OUTPUT_NAMES)}")
    for i, entry in enumerate(manifest["files"]):
        _check(path, f"files[{i}]", entry, FILE_ENTRY, FILE_ENTRY_OPTIONAL, closed=False)
        if sorted(entry["output_map"]) != names:
            raise BundleError(f"{path}: `files[{i}].output_map` maps {sorted(entry['output_map'])}; expected {names}")
    return manifest


def _check(path: Path, where: str, value: dict, rules: Rules, optional: Rules | None = None, closed: bool = True) -> None:
    """Refuse the manifest unless object `where` has every key of `rules`, each value as
    expected, and (if `closed`) no key outside `rules` and `optional`."""
    optional = optional or {}

    def name(key: str) -> str:
        return f"{where}.{key}" if where else key

    unknown = sorted(set(value) - set(rules) - set(optional)) if closed else []
    if unknown:
        raise BundleError(f"{path}: unknown fields {[name(k) for k in unknown]}; refusing a manifest this SDK does not understand")
    missing = sorted(set(rules) - set(value))
    if missing:
        raise BundleError(f"{path}: missing fields {[name(k) for k in missing]}")
    for key, (check, expected) in {**rules, **optional}.items():
        if key in value and not check(value[key]):
            raise BundleError(f"{path}: `{name(key)}` must be {expected}, not {json.dumps(value[key])[:60]}")


def resolve_in_bundle(bundle_dir: Path, name: str) -> Path:
    """Path of `name` inside the bundle; refuses anything that would leave it."""
    root = bundle_dir.resolve()
    candidate = bundle_dir / name
    if Path(name).is_absolute() or ".." in Path(name).parts or candidate.resolve().parent != root:
        raise BundleError(f"{bundle_dir}: file {name!r} leaves the bundle directory")
    if not candidate.exists():
        raise BundleError(f"{bundle_dir}: file {name} listed in the manifest is missing")
    # A directory (an .mlpackage) is read whole by its runtime: no link inside may leave either.
    for inner in candidate.rglob("*") if candidate.is_dir() else ():
        if not inner.resolve().is_relative_to(root):
            raise BundleError(f"{bundle_dir}: {inner.relative_to(bundle_dir)} in {name} links out of the bundle directory")
    return candidate


def verified_file(bundle_dir: str | Path, manifest: dict, name: str | None = None) -> tuple[Path, dict]:
    """The model file `name` (default: the manifest's preferred one), its sha256 checked."""
    bundle_dir = Path(bundle_dir)
    name = name or manifest["preferred_file"]
    entries = {entry["file"]: entry for entry in manifest["files"]}
    if name not in entries:
        raise BundleError(f"{bundle_dir}: no model file {name!r}; the bundle has {', '.join(entries)}")
    path = resolve_in_bundle(bundle_dir, name)
    if sha256_of(path) != entries[name]["sha256"]:
        raise BundleError(f"{path}: sha256 differs from the manifest (modified or truncated file); refusing to load it")
    return path, entries[name]


def verified_checkpoint(manifest: dict, weights: str | Path) -> Path:
    """`weights` for the torch runtime; refused (before it is unpickled) when the manifest
    records the checkpoint the bundle was built from and this file is another one."""
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint not found: {weights}")
    record = manifest["checkpoint"]
    if record is not None and sha256_of(weights) != record["sha256"]:
        raise BundleError(
            f"{weights}: sha256 differs from the checkpoint this bundle was built from "
            f"({record['name']}, sha256 {record['sha256'][:12]}...); refusing another network as its reference"
        )
    return weights
