"""What to benchmark: bundle and file arguments -> verified targets, labels, the baseline.

Every file and the golden vectors are verified (sha256 against the manifest) before any
timing, so a bad argument fails in a second with one line, not after minutes of runs.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from featherface.records import FileEntry, Manifest
from featherface.sdk.bundle import BundleError, is_bundle, read_manifest, verified_file
from featherface.sdk.detector import Detector, ModelSpec
from featherface.sdk.runtimes import COREML, RuntimeSpec, RuntimeUnavailable, open_runtime, runtime_for, runtime_name_for
from featherface.verify.golden import Golden, load_golden

COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


class BenchError(ValueError):
    """A bad bench argument (path, bundle, file, option); the message says which and why."""


@dataclass
class Target:
    """One model file of one bundle (and one Core ML compute unit), verified."""

    bundle: Path
    manifest: Manifest
    file: str
    entry: FileEntry
    golden: Golden | None
    compute_units: str | None = None  # Core ML only
    label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def runtime_name(self) -> str:
        return runtime_name_for(self.file)

    @property
    def is_coreml(self) -> bool:
        return self.runtime_name == COREML.name


def runtime_available(runtime: RuntimeSpec) -> str | None:
    """None if `runtime` can run here, else why not (checked without importing it)."""
    if runtime.opener is None:
        return f"no runtime {runtime.name!r} in the bench"
    if runtime.name == COREML.name and platform.system() != "Darwin":
        return "Core ML runs only on macOS/iOS (see device_bench/ios for iPhones)"
    return None if runtime.installed() else runtime.not_installed


def _bundle_and_file(argument: str) -> tuple[Path, str | None]:
    path = Path(argument)
    if not path.exists():
        raise BenchError(f"{argument}: no such file or directory")
    if path.is_dir() and is_bundle(path):
        return path, None
    if is_bundle(path.parent):
        return path.parent, path.name
    raise BenchError(f"{argument} is not a bundle (no manifest.json) nor a model file inside one")


def resolve_targets(arguments: list[str], notes: list[str]) -> list[Target]:
    """Verified targets of the arguments, in order; runs nothing, imports no runtime.

    A bundle means all of its model files a runtime here can run (the others are noted
    and skipped); a file inside a bundle means that file, and an error if it cannot run.
    An .mlpackage becomes one target per Core ML compute unit.
    """
    targets: list[Target] = []
    seen: set[tuple[Path, str]] = set()
    goldens: dict[Path, Golden | None] = {}
    for argument in arguments:
        bundle, name = _bundle_and_file(argument)
        manifest = read_manifest(bundle)
        listed = [entry.file for entry in manifest.files]
        if name and name not in listed:
            raise BenchError(f"{argument} is not a model file of the bundle {bundle} (its model files: {', '.join(listed) or 'none'})")
        names = [name] if name else listed
        if not names:
            raise BenchError(f"{bundle}: the manifest lists no model files")
        for file in names:
            key = (bundle.resolve(), file)
            if key in seen:
                notes.append(f"{bundle.name}/{file} given twice; benchmarked once")
                continue
            try:
                runtime = runtime_for(file)
            except ValueError as err:
                raise BenchError(str(err)) from None
            problem = runtime_available(runtime)
            if problem:
                if name:
                    raise BenchError(f"{argument}: cannot run here: {problem}")
                notes.append(f"skipped {bundle.name}/{file}: {problem}")
                continue
            _, entry = verified_file(bundle, manifest, file)
            seen.add(key)
            if bundle.resolve() not in goldens:
                goldens[bundle.resolve()] = load_golden(bundle, manifest)
            golden = goldens[bundle.resolve()]
            units = COMPUTE_UNITS if runtime.name == COREML.name else (None,)
            targets.extend(Target(bundle, manifest, file, entry, golden, unit) for unit in units)
    if not targets:
        raise BenchError("nothing to benchmark here: " + "; ".join(notes or ["no model files"]))
    assign_labels(targets)
    return targets


def assign_labels(targets: list[Target]) -> None:
    """Labels "BUNDLE_DIR/FILE" (plus "@UNITS" for Core ML), made unique by prefixing parent
    folders where two bundles share a directory name."""
    depth = {id(t): 1 for t in targets}

    def label(t: Target) -> str:
        parts = t.bundle.resolve().parts[-depth[id(t)]:]
        text = "/".join(parts + (t.file,))
        return f"{text}@{t.compute_units}" if t.compute_units else text

    for _ in range(64):
        by_label: dict[str, list[Target]] = {}
        for t in targets:
            by_label.setdefault(label(t), []).append(t)
        clashes = [group for group in by_label.values() if len(group) > 1]
        if not clashes:
            break
        for group in clashes:
            for t in group:
                depth[id(t)] += 1
    for t in targets:
        t.label = label(t)


def pick_baseline(targets: list[Target], name: str | None) -> Target:
    """The target `--baseline NAME` designates (default: the first).

    NAME matches a label ("pi4/model_fp32.tflite", "...@CPU_ONLY"), a file name, a bundle
    directory name or path, an arch or a bundle target. Several matches: a bundle's
    preferred file first, then argument order.
    """
    if name is None:
        return targets[0]
    for t in targets:
        if t.label == name:
            return t

    def matches(t: Target) -> bool:
        keys = {
            t.label.split("@")[0], t.file, t.bundle.name, str(t.bundle), str(t.bundle.resolve()),
            str(t.bundle / t.file), t.manifest.arch, t.manifest.target,
        }
        return name.rstrip("/") in keys or t.label.endswith("/" + name)

    candidates = [t for t in targets if matches(t)]
    if not candidates:
        raise BenchError(f"--baseline {name!r} matches none of: {', '.join(t.label for t in targets)}")
    preferred = [t for t in candidates if t.file == t.manifest.preferred_file]
    return (preferred or candidates)[0]


@dataclass
class Opened:
    """A target opened at one thread count: its Detector and load timings."""

    target: Target
    detector: Detector
    threads: int | None
    verify_ms: float
    open_ms: float

    @property
    def load_ms(self) -> float:
        return self.verify_ms + self.open_ms


def open_target(target: Target, threads: int | None) -> Opened:
    """What `Detector.load` does (read the manifest, verify the file's sha256, open the
    runtime), timed in two parts; Core ML opens at the target's compute units."""
    start = time.perf_counter()
    manifest = read_manifest(target.bundle)
    path, entry = verified_file(target.bundle, manifest, target.file)
    verified = time.perf_counter()
    if target.is_coreml:
        from .coreml import open_coreml

        runtime = open_coreml(path, entry, target.compute_units or "ALL", manifest.input.mean)
    else:
        runtime = open_runtime(path, None, threads)
    opened = time.perf_counter()
    detector = Detector(runtime, ModelSpec.from_manifest(manifest, entry), path.name)
    return Opened(target, detector, threads, 1000 * (verified - start), 1000 * (opened - verified))


__all__ = [
    "BenchError", "BundleError", "COMPUTE_UNITS", "Golden", "Opened", "RuntimeUnavailable", "Target",
    "assign_labels", "load_golden", "open_target", "pick_baseline", "resolve_targets",
]
