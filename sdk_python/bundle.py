"""Read and verify a bundle's manifest: a bundle is untrusted input on a device.

Refused: an unknown format version, a missing, unknown or mistyped field (nested ones
too: featherface.records holds the table of what the SDK reads), a file path that leaves the bundle (`..`,
absolute, or a symlink pointing out), a missing file, and a file whose sha256 differs
from the manifest's (tampered or truncated).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from featherface.atomic import write_text_atomic
from featherface.records import MANIFEST_FIELDS, FileEntry, Manifest, ManifestError

__all__ = ["MANIFEST_FIELDS", "MANIFEST_FILE", "BundleError", "is_bundle", "read_manifest", "resolve_in_bundle", "sha256_of", "verified_checkpoint", "verified_file", "write_manifest"]

MANIFEST_FILE = "manifest.json"  # what makes a directory a bundle


class BundleError(ValueError):
    """A bundle that cannot be trusted or used; the message names the file and the problem."""


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory (an .mlpackage) over its sorted files' names and bytes.

    The build records every sha256 of a manifest with this same function.
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


def is_bundle(path: str | Path) -> bool:
    """Whether `path` is a bundle directory: one that holds a manifest."""
    return (Path(path) / MANIFEST_FILE).is_file()


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    """manifest.json into `bundle_dir`, atomically (a reader never sees half of it)."""
    return write_text_atomic(Path(bundle_dir) / MANIFEST_FILE, json.dumps(manifest.to_json(), indent=2) + "\n")


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """The bundle's manifest, validated (featherface.records.Manifest.from_json)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a bundle: no manifest.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from None
    try:
        return Manifest.from_json(data, str(path))
    except ManifestError as err:
        raise BundleError(str(err)) from None


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


def verified_file(bundle_dir: str | Path, manifest: Manifest, name: str | None = None) -> tuple[Path, FileEntry]:
    """The model file `name` (default: the manifest's preferred one), its sha256 checked."""
    bundle_dir = Path(bundle_dir)
    name = name or manifest.preferred_file
    entries = {entry.file: entry for entry in manifest.files}
    if name not in entries:
        raise BundleError(f"{bundle_dir}: no model file {name!r}; the bundle has {', '.join(entries)}")
    path = resolve_in_bundle(bundle_dir, name)
    if sha256_of(path) != entries[name].sha256:
        raise BundleError(f"{path}: sha256 differs from the manifest (modified or truncated file); refusing to load it")
    return path, entries[name]


def verified_checkpoint(manifest: Manifest, weights: str | Path) -> Path:
    """`weights` for the torch runtime; refused (before it is unpickled) when the manifest
    records the checkpoint the bundle was built from and this file is another one."""
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint not found: {weights}")
    record = manifest.checkpoint
    if record is not None and sha256_of(weights) != record.sha256:
        raise BundleError(
            f"{weights}: sha256 differs from the checkpoint this bundle was built from "
            f"({record.name}, sha256 {record.sha256[:12]}...); refusing another network as its reference"
        )
    return weights
