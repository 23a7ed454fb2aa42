"""`make pi-check` / `python -m featherface.bench.pi_check`: every file of a pi4 bundle checked
on an emulated Raspberry Pi 4, from this (x86 Linux) machine.

The emulated Pi is Debian bookworm's arm64 Python 3.11 (debs unpacked into a folder), the
aarch64 wheels a Pi's pip picks and the SDK installed as the README tells a Pi user, all run
by `qemu-aarch64-static -cpu cortex-a72 -L ROOT`. It runs the bench (golden-vector parity of
every file) and `featherface detect` on a few photos, compared with the same command here.
Exit status: 0 all passed, 1 some parity or detection check failed, 2 the setup failed.
Results and the reasons behind the choices below: docs/pi-check.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from featherface.config import DEPLOY_THRESHOLDS, NUM_LANDMARKS
from featherface.errors import run_reporting
from featherface.sdk.bundle import BundleError, is_bundle, read_manifest
from featherface.sdk.sources import image_files, spread
from featherface.verify.check import robust_floor

from .records import BenchReport

PROG = "pi-check"
CPU = "cortex-a72"  # the Raspberry Pi 4's core (BCM2711)
PYTHON = "usr/bin/python3.11"  # Debian bookworm's, as on Raspberry Pi OS 64-bit
# The emulated userland: Python and the C++ runtime the wheels link against; apt adds the rest.
DEBIAN_PACKAGES = ("python3.11", "libstdc++6")
# Pulled in by dpkg's own dependencies, never needed to run Python.
DEBIAN_SKIPPED = ("dpkg", "tar", "install-info")
# The README's Pi instructions, word for word: what a Pi user gets today.
PI_WHEELS = ("numpy==2.3.5", "pillow", "ai-edge-litert")
# pip on bookworm (glibc 2.36) accepts every manylinux tag up to 2_36; pip's --platform
# does not expand a tag downwards, so the whole list is given.
WHEEL_PLATFORMS = tuple(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)) + ("manylinux2014_aarch64",)
PHOTOS = 5
# `detect` runs at this score on both machines, so that a face whose score merely crosses
# the deploy threshold between x86 and ARM kernels is still seen on both sides (the robust
# agreement of featherface.verify.parity).
DEPLOY_SCORE = DEPLOY_THRESHOLDS.score
DETECT_FLOOR = round(robust_floor(DEPLOY_THRESHOLDS).score, 6)  # as text on a command line
# Same file, same input, another CPU's kernels: boxes must sit on top of each other.
MIN_MEAN_IOU = 0.9
# A Raspberry Pi 4's /proc/cpuinfo (Raspberry Pi OS 64-bit) for each emulated core. qemu
# before 8 shows the emulated program the host's x86 /proc/cpuinfo, and LiteRT 2.2+ (its
# cpuinfo library) then crashes while creating the interpreter; qemu looks absolute paths
# up under -L ROOT first, so ROOT/proc/cpuinfo is what the program reads.
CPUINFO_CORE = """processor\t: {index}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""


class PiCheckError(RuntimeError):
    """A setup step failed; the message names the step and what to do."""


@dataclass(frozen=True)
class Layout:
    """The cached emulated Pi under one ignored folder (.pi-root/ by default)."""

    base: Path

    @property
    def debs(self) -> Path:
        return self.base / "debs"

    @property
    def sysroot(self) -> Path:
        return self.base / "sysroot"

    @property
    def sysroot_stamp(self) -> Path:
        return self.base / "sysroot.json"

    def wheels(self, specs: Sequence[str]) -> Path:
        """One folder per list of wheel specs, so that switching LiteRT versions keeps both."""
        key = hashlib.sha256("\n".join(specs).encode()).hexdigest()[:12]
        return self.base / f"wheels-{key}"

    @property
    def sdk(self) -> Path:
        return self.base / "sdk"

    @property
    def out(self) -> Path:
        return self.base / "out"


# ---------------------------------------------------------------- commands (pure)


def emulated_python(qemu: str, cpu: str, sysroot: Path, argv: Sequence[str]) -> list[str]:
    """The command line that runs the emulated Pi's python3.11 with `argv`."""
    return [qemu, "-cpu", cpu, "-L", str(sysroot), str(sysroot / PYTHON), *argv]


def emulated_env(site_dirs: Sequence[Path], base: Mapping[str, str]) -> dict[str, str]:
    """`base` without what would leak this machine's Python (venv, PYTHONPATH, QEMU_*)
    into the emulated one, with `site_dirs` on its path."""
    leaking = ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in base.items() if k not in leaking and not k.startswith("QEMU_")}
    env["PYTHONPATH"] = os.pathsep.join(str(d) for d in site_dirs)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("LANG", "C.UTF-8")
    return env


def wheel_install_command(pip: Sequence[str], target: Path, specs: Sequence[str]) -> list[str]:
    """pip installing the aarch64 CPython 3.11 wheels of `specs` into `target`."""
    platforms = [arg for tag in WHEEL_PLATFORMS for arg in ("--platform", tag)]
    return [
        *pip, "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts", "--target", str(target),
        *platforms, "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *specs,
    ]


def wheel_specs(litert: str) -> tuple[str, ...]:
    """The README's Pi wheels with LiteRT's requirement replaced by `litert`."""
    return tuple(spec for spec in PI_WHEELS if not spec.startswith("ai-edge-litert")) + (litert,)


def sdk_install_command(pip: Sequence[str], target: Path, repo: Path) -> list[str]:
    """The README's `pip install --no-deps .`, into `target` (no venv to put it in)."""
    return [*pip, "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts", "--no-deps",
            "--target", str(target), str(repo)]


def bench_argv(script: Path, bundle: Path, out: Path, threads: str) -> list[str]:
    """`featherface bench` for parity: one timed run (emulated latency means nothing)."""
    return [str(script), "bench", str(bundle), "--runs", "1", "--warmup", "0", "--threads", threads,
            "--json", "--out", str(out)]


def detect_argv(script: Path, bundle: Path, file: str, photos: Sequence[Path]) -> list[str]:
    return [str(script), "detect", "--bundle", str(bundle), "--file", file, "--score", str(DETECT_FLOOR),
            "--json", *map(str, photos)]


def pi4_cpuinfo(cores: int, model: str) -> str:
    """/proc/cpuinfo as a Raspberry Pi 4 prints it, for `cores` cores, its Model line `model`."""
    body = "\n".join(CPUINFO_CORE.format(index=i) for i in range(max(1, cores)))
    return f"{body}\nModel\t\t: {model}\n"


def arm64_closure(apt_cache_depends: str) -> list[str]:
    """arm64 package names from `apt-cache depends --recurse` output (dpkg's tools left out)."""
    names = []
    for line in apt_cache_depends.splitlines():
        if line.startswith((" ", "<")) or not line.endswith(":arm64"):
            continue
        if line.split(":")[0] in DEBIAN_SKIPPED or line in names:
            continue
        names.append(line)
    return names


# ---------------------------------------------------------------- comparison (pure)


def parse_detect_lines(stdout: str) -> dict[str, list[dict]]:
    """`detect --json` output -> {image: faces}; lines that are not JSON objects are skipped."""
    faces: dict[str, list[dict]] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        faces[record["image"]] = record["faces"]
    return faces


def _detections(faces: list[dict]):
    import numpy as np

    from featherface.verify.parity import Detections

    return Detections(
        np.array([f["box"] for f in faces], np.float64).reshape(-1, 4),
        np.array([f["score"] for f in faces], np.float64),
        np.array([np.ravel(f["landmarks"]) for f in faces], np.float64).reshape(-1, 2 * NUM_LANDMARKS),
    )


def compare_detections(host: dict[str, list[dict]], emulated: dict[str, list[dict]]) -> dict:
    """The emulated Pi's faces against this machine's, same file, same photos.

    Passes when every clear face (score above DEPLOY_SCORE + ROBUST_MARGIN) on either side is found
    on the other (robust recall and precision 1.0) and matched boxes overlap by MIN_MEAN_IOU
    on average. A photo missing from either side fails.
    """
    from featherface.verify.parity import detection_agreement

    missing = sorted(set(host) ^ set(emulated))
    if missing:
        return {"status": "fail", "reason": f"photos not processed on both machines: {', '.join(missing)}"}
    images = sorted(host)
    agreement = detection_agreement([_detections(host[i]) for i in images], [_detections(emulated[i]) for i in images],
                                    DEPLOY_SCORE)
    ok = agreement.robust_recall >= 1.0 and agreement.robust_precision >= 1.0 and agreement.mean_iou >= MIN_MEAN_IOU
    result = {"status": "pass" if ok else "fail", "photos": len(images), **agreement.to_json()}
    if agreement.reference_faces == agreement.candidate_faces == 0:
        result["note"] = "no face above the threshold in these photos on either machine: nothing was compared"
    return result


def exit_status(bench_report: BenchReport | None, detect_results: Mapping[str, dict]) -> int:
    """0 when the bench's parity and every file's detections passed, else 1."""
    if bench_report is None or bench_report.parity != "pass" or not bench_report.results:
        return 1
    return 0 if all(r.get("status") == "pass" for r in detect_results.values()) else 1


# ---------------------------------------------------------------- setup (I/O)


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _run(command: Sequence[str], step: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(command), text=True, **kwargs)
    except OSError as err:
        raise PiCheckError(f"{step}: cannot run {command[0]}: {err}") from None
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if isinstance(result.stderr, str) else []
        raise PiCheckError(f"{step}: `{' '.join(map(str, command[:4]))} ...` exited {result.returncode}"
                           + (f": {detail[0]}" if detail else ""))
    return result


def find_qemu(install: bool) -> str:
    """qemu-aarch64-static (or qemu-aarch64); installed from Debian's packages when missing
    and this is root with apt-get."""
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        found = shutil.which(name)
        if found:
            return found
    can_install = install and shutil.which("apt-get") and os.geteuid() == 0
    if not can_install:
        raise PiCheckError("qemu-aarch64-static is missing: install Debian's qemu-user-static "
                           "(sudo apt-get install qemu-user-static) and run again")
    _progress("qemu-aarch64-static is missing: installing Debian's qemu-user-static with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "install", "-y", "-q", "qemu-user-static"], "installing qemu-user-static",
         env=env, capture_output=True)
    found = shutil.which("qemu-aarch64-static")
    if not found:
        raise PiCheckError("apt-get installed qemu-user-static but qemu-aarch64-static is not on PATH")
    return found


def qemu_version(qemu: str) -> str:
    result = subprocess.run([qemu, "--version"], capture_output=True, text=True)
    return result.stdout.splitlines()[0].strip() if result.stdout else qemu


def build_sysroot(layout: Layout) -> bool:
    """Debian bookworm arm64 python3.11 unpacked under layout.sysroot (once); True if built now."""
    if layout.sysroot_stamp.is_file() and (layout.sysroot / PYTHON).is_file():
        return False
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PiCheckError("building the emulated Pi needs Debian's apt-get and dpkg-deb")
    foreign = _run(["dpkg", "--print-foreign-architectures"], "reading dpkg's architectures",
                   capture_output=True).stdout.split()
    if "arm64" not in foreign:
        if os.geteuid() != 0:
            raise PiCheckError("apt does not know arm64 packages: run `sudo dpkg --add-architecture arm64 "
                               "&& sudo apt-get update` once, then again")
        _progress("adding arm64 to dpkg's architectures (dpkg --add-architecture arm64) and updating apt's lists")
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64", capture_output=True)
        _run(["apt-get", "update", "-q"], "apt-get update", capture_output=True)
    depends = _run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                    "--no-breaks", "--no-replaces", "--no-enhances", *[f"{p}:arm64" for p in DEBIAN_PACKAGES]],
                   "apt-cache depends", capture_output=True).stdout
    packages = arm64_closure(depends)
    if not packages:
        raise PiCheckError("apt-cache knows no arm64 python3.11: run `apt-get update` after "
                           "`dpkg --add-architecture arm64`")
    shutil.rmtree(layout.debs, ignore_errors=True)
    shutil.rmtree(layout.sysroot, ignore_errors=True)
    layout.debs.mkdir(parents=True)
    _progress(f"downloading {len(packages)} Debian bookworm arm64 packages (apt-get download)")
    _run(["apt-get", "download", "-q", *packages], "apt-get download", cwd=layout.debs, capture_output=True)
    debs = sorted(layout.debs.glob("*.deb"))
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(layout.sysroot)], f"unpacking {deb.name}", capture_output=True)
    layout.sysroot_stamp.write_text(json.dumps({"packages": [d.name for d in debs]}, indent=1) + "\n")
    return True


def write_cpuinfo(layout: Layout, emulator: str) -> None:
    """The emulated Pi's /proc/cpuinfo (see CPUINFO_CORE), rewritten each run: it names the emulator."""
    proc = layout.sysroot / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text(pi4_cpuinfo(os.cpu_count() or 1, f"Raspberry Pi 4 userland emulated by {emulator}"))


def install_wheels(layout: Layout, specs: Sequence[str]) -> tuple[Path, bool]:
    """The aarch64 wheels of `specs` in their own folder (once per list); (folder, built now)."""
    target = layout.wheels(specs)
    stamp = target / ".pi-check.json"
    if stamp.is_file():
        return target, False
    shutil.rmtree(target, ignore_errors=True)
    _progress(f"installing the aarch64 wheels a Pi gets: {' '.join(specs)}")
    _run(wheel_install_command([sys.executable, "-m", "pip"], target, specs), "pip install (aarch64 wheels)",
         stderr=subprocess.PIPE)
    stamp.write_text(json.dumps({"specs": list(specs)}) + "\n")
    return target, True


def install_sdk(layout: Layout, repo: Path) -> Path:
    """The SDK from this checkout, fresh each run (the code under test changes, the rest not)."""
    shutil.rmtree(layout.sdk, ignore_errors=True)
    _run(sdk_install_command([sys.executable, "-m", "pip"], layout.sdk, repo), "pip install --no-deps (the SDK)",
         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return layout.sdk


def installed_version(site: Path, distribution: str) -> str | None:
    prefix = distribution.replace("-", "_") + "-"
    for info in site.glob("*.dist-info"):
        if info.name.startswith(prefix):
            return info.name[len(prefix):-len(".dist-info")]
    return None


def default_photos(count: int) -> list[Path]:
    """`count` WIDER FACE validation photos from ../shared, spread over its events."""
    from featherface.paths import default_parity_images

    folder = default_parity_images()
    if folder is None:
        raise PiCheckError("no validation photos: ../shared/data/widerface is absent; pass --photo PATH")
    return spread(image_files(folder), count)


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class Emulator:
    qemu: str
    cpu: str
    sysroot: Path
    sdk: Path
    wheels: Path

    @property
    def featherface(self) -> Path:
        """The SDK's console script; the emulated python runs it (its shebang is this machine's)."""
        return self.sdk / "bin" / "featherface"

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(emulated_python(self.qemu, self.cpu, self.sysroot, argv),
                              env=emulated_env([self.sdk, self.wheels], os.environ), text=True, **kwargs)


def host_featherface() -> list[str]:
    script = Path(sys.executable).parent / "featherface"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "featherface.cli"]


def bundle_files(bundle: Path) -> list[str]:
    """The bundle's LiteRT files, from its validated manifest."""
    try:
        manifest = read_manifest(bundle)
    except BundleError as err:
        raise PiCheckError(str(err)) from None
    return [entry.file for entry in manifest.files if entry.file.endswith(".tflite")]


def check_detections(emulator: Emulator, script: Path, bundle: Path, files: Sequence[str],
                     photos: Sequence[Path], progress: Callable[[str], None]) -> dict[str, dict]:
    """Per file: `detect` on the emulated Pi against `detect` here."""
    results = {}
    for name in files:
        progress(f"detect with {name} on {len(photos)} photo(s), emulated and here")
        emulated = emulator.run(detect_argv(script, bundle, name, photos), capture_output=True)
        host = subprocess.run(host_featherface() + detect_argv(script, bundle, name, photos)[1:],
                              capture_output=True, text=True)
        if emulated.returncode != 0 or host.returncode != 0:
            side, failed = ("emulated", emulated) if emulated.returncode != 0 else ("x86", host)
            tail = failed.stderr.strip().splitlines()[-1:] or [f"exit {failed.returncode}"]
            results[name] = {"status": "fail", "reason": f"detect on {side} exited {failed.returncode}: {tail[0]}"}
            continue
        results[name] = compare_detections(parse_detect_lines(host.stdout), parse_detect_lines(emulated.stdout))
    return results


def build_parser() -> argparse.ArgumentParser:
    from featherface.paths import REPO_ROOT

    parser = argparse.ArgumentParser(prog="python -m featherface.bench.pi_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "dist" / "pi4", help="pi4 bundle (default dist/pi4)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT / ".pi-root", help="cache of the emulated Pi (default .pi-root)")
    parser.add_argument("--cpu", default=CPU, help=f"qemu -cpu model (default {CPU}, the Pi 4's core)")
    parser.add_argument("--litert", default="ai-edge-litert",
                        help="LiteRT requirement (default: unpinned, as the README installs it; e.g. ai-edge-litert==2.1.0)")
    parser.add_argument("--photo", type=Path, action="append", help="photo for the detect comparison (repeatable; "
                        f"default {PHOTOS} WIDER FACE validation photos from ../shared)")
    parser.add_argument("--threads", default="1", help="bench thread counts (default 1: parity does not need more)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install qemu")
    return parser


def prepare(args: argparse.Namespace, layout: Layout, timings: dict[str, float]) -> tuple[Emulator, str, str | None]:
    """The emulated Pi, built or taken from the cache: (emulator, its name, LiteRT version)."""
    from featherface.paths import REPO_ROOT

    specs = wheel_specs(args.litert)
    step = time.perf_counter()
    qemu = find_qemu(install=not args.no_install)
    name = f"{qemu_version(qemu)} -cpu {args.cpu}"
    timings["qemu_s"] = time.perf_counter() - step
    step = time.perf_counter()
    built = build_sysroot(layout)
    write_cpuinfo(layout, name)
    timings["sysroot_s" if built else "sysroot_cached_s"] = time.perf_counter() - step
    step = time.perf_counter()
    wheels, built = install_wheels(layout, specs)
    timings["wheels_s" if built else "wheels_cached_s"] = time.perf_counter() - step
    step = time.perf_counter()
    sdk = install_sdk(layout, REPO_ROOT)
    timings["sdk_s"] = time.perf_counter() - step
    return Emulator(qemu, args.cpu, layout.sysroot, sdk, wheels), name, installed_version(wheels, "ai-edge-litert")


def summarize(report: BenchReport, detections: Mapping[str, dict]) -> None:
    """One line per file on stderr: golden parity here, detect against x86."""
    for result in report.results:
        parity, found = result.parity, detections.get(result.file, {})
        why = "; ".join(parity.reasons) if not parity.passed else ""
        if found.get("status") == "fail":
            why += ("; " if why else "") + (found.get("reason") or "clear faces or boxes differ from x86's")
        why = "; ".join(filter(None, [why, found.get("note")]))
        _progress(f"{result.label}: golden parity {parity.status}, detect vs x86 {found.get('status', '-')}"
                  + (f" ({why})" if why else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting(PROG, lambda: _check(args))


def _check(args: argparse.Namespace) -> int:
    bundle = args.bundle.resolve()
    layout = Layout(args.root.resolve())
    timings: dict[str, float] = {}
    if not is_bundle(bundle):
        raise PiCheckError(f"{bundle} is not a bundle (no manifest.json): run `make build` first, "
                           "or pass BUNDLE=path/to/pi4")
    files = bundle_files(bundle)
    photos = [p.resolve() for p in args.photo] if args.photo else default_photos(PHOTOS)
    emulator, name, litert = prepare(args, layout, timings)
    _progress(f"emulated Pi ready ({name}; Python 3.11 arm64, ai-edge-litert {litert}) in "
              f"{sum(timings.values()):.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

    script = emulator.featherface
    step = time.perf_counter()
    layout.out.mkdir(parents=True, exist_ok=True)
    bench = emulator.run(bench_argv(script, bundle, layout.out / "bench", args.threads), stdout=subprocess.PIPE)
    timings["bench_s"] = time.perf_counter() - step
    try:
        report = BenchReport.from_json(json.loads(bench.stdout)) if bench.stdout.strip() else None
    except ValueError:  # json's errors too
        report = None
    if report is None:
        print(f"{PROG}: error: the emulated bench exited {bench.returncode} without a report "
              "(a crash of the runtime shows as exit -11 or 139)", file=sys.stderr)
        return 1
    step = time.perf_counter()
    detections = check_detections(emulator, script, bundle, files, photos, _progress)
    timings["detect_s"] = time.perf_counter() - step
    checked = report.to_json()
    checked["emulation"] = {
        "emulator": name, "cpu": args.cpu, "python": "Debian bookworm python3.11 (arm64)",
        "wheels": list(wheel_specs(args.litert)), "ai_edge_litert": litert,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "note": "latency under emulation means nothing; time a real Pi with `featherface bench`",
    }
    checked["detect_vs_x86"] = {"photos": [str(p) for p in photos], "files": detections}
    print(json.dumps(checked, indent=2))
    (layout.out / "pi-check.json").write_text(json.dumps(checked, indent=2) + "\n")
    summarize(report, detections)
    status = exit_status(report, detections)
    _progress(("every file passed" if status == 0 else "FAILED") + f" on the emulated {args.cpu} "
              f"(bench {timings['bench_s']:.0f} s, detect {timings['detect_s']:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
