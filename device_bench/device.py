"""What the bench ran on: CPU, cores, OS, Python, runtime versions, CPU governor; memory.

Everything is read without importing a runtime (package metadata only) and degrades to
None where the platform does not say (no /proc on macOS, no `resource` on Windows).
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from featherface.sdk.runtimes import RUNTIMES
from featherface.versions import package_versions

from .records import DeviceInfo

# Package names as installed (pip), in the order shown in reports: those of the runtimes
# the bench runs (every one but torch), then the SDK's own.
RUNTIME_PACKAGES = tuple(package for runtime in RUNTIMES if runtime.opener for package in runtime.packages) + ("numpy", "pillow")

# ARM "CPU part" codes of /proc/cpuinfo (implementer 0x41, ARM Ltd), for boards whose
# cpuinfo names no model (Raspberry Pi OS 64-bit, many Android kernels).
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3",
}
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip().rstrip("\x00") or None
    except OSError:
        return None


def _cpuinfo_fields(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str:
    """A human CPU description: /proc/cpuinfo on Linux/Android, sysctl on macOS, else platform."""
    text = cpuinfo if cpuinfo is not None else _read(Path("/proc/cpuinfo"))
    if text:
        fields = _cpuinfo_fields(text)
        for key in ("model name", "hardware", "cpu model", "processor"):
            values = [v for v in fields.get(key, []) if v and not v.isdigit()]
            if values:
                return values[0]
        parts = sorted({ARM_PARTS.get(p.lower(), f"ARM part {p}") for p in fields.get("cpu part", [])})
        board = fields.get("model", [None])[0] or _read(Path("/proc/device-tree/model"))
        if parts:
            return f"{' + '.join(parts)}" + (f" ({board})" if board else "")
        if board:
            return board
    if platform.system() == "Darwin":
        try:
            brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
            if brand.returncode == 0 and brand.stdout.strip():
                return brand.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask in containers), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def memory_total_mb() -> float | None:
    text = _read(Path("/proc/meminfo"))
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**20, 1)
    except Exception:  # psutil absent or unsupported here
        return None


def describe_device() -> DeviceInfo:
    """The device section of a report."""
    from featherface import __version__

    max_freq = _read(MAX_FREQ)
    return DeviceInfo(
        cpu=cpu_model(),
        machine=platform.machine(),
        cores=os.cpu_count(),
        usable_cores=usable_cores(),
        memory_mb=memory_total_mb(),
        os=platform.platform(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        featherface=__version__,
        runtimes=package_versions(RUNTIME_PACKAGES),
        cpu_governor=_read(GOVERNOR),
        cpu_max_mhz=round(int(max_freq) / 1000) if max_freq and max_freq.isdigit() else None,
    )


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where unknown).

    Linux/Android: VmHWM of /proc/self/status, the high-water mark of this process's own
    address space. Not ru_maxrss there: a child started by a large process inherits its
    parent's peak in ru_maxrss (recorded when exec drops the copied address space).
    Elsewhere resource.getrusage (ru_maxrss: bytes on macOS), else psutil's peak working
    set (Windows).
    """
    status = _read(Path("/proc/self/status"))
    if status:
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)
    except ImportError:
        pass
    try:
        import psutil

        info = psutil.Process().memory_info()
        peak = getattr(info, "peak_wset", None)
        return round(peak / 2**20, 1) if peak else None
    except Exception:
        return None


def current_rss_mb() -> float | None:
    """This process's resident memory now, in MiB (None where unknown)."""
    statm = _read(Path("/proc/self/statm"))
    if statm:
        return round(int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:
        return None
