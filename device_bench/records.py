"""The bench's report as types: a `BenchResult` per file and thread count, the whole run's
`BenchReport`. `to_json` writes bench.json exactly as device_bench/README.md lists it, key
for key and in order; `from_json` reads a saved one back (pi_check reads the emulated run's).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any

import numpy as np

from featherface.records import ParityRecord

SCHEMA = "featherface-bench/1"


def jsonable(value):
    """Non-finite floats -> None (JSON has no Infinity/NaN); NumPy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _plain(value):
    """A field as JSON data: records through their own `to_json`, other dataclasses field by field."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "to_json"):
        return value.to_json()
    return asdict(value) if is_dataclass(value) else value


@dataclass(frozen=True)
class DeviceInfo:
    """What the bench ran on (device.describe_device); None where the platform does not say."""

    cpu: str
    machine: str
    cores: int | None
    usable_cores: int
    memory_mb: float | None
    os: str
    python: str
    featherface: str
    runtimes: dict[str, str]  # installed package -> version, in RUNTIME_PACKAGES order
    cpu_governor: str | None
    cpu_max_mhz: int | None

    def line(self) -> str:
        """One line for progress output and a manifest's `preferred_by.device`."""
        runtimes = ", ".join(f"{name} {version}" for name, version in self.runtimes.items())
        return (f"{self.cpu} ({self.machine}), {self.usable_cores}/{self.cores} cores, {self.os}, {self.python}; "
                f"{runtimes}; governor {self.cpu_governor or 'not readable'}")


@dataclass(frozen=True)
class Timing:
    """Latencies of the timed runs in ms (stats.summarize): percentiles by linear interpolation."""

    min: float
    p50: float
    p90: float
    p99: float
    mean: float
    max: float
    n: int


@dataclass(frozen=True)
class BaselineRatio:
    """Median over rounds of (this file / `baseline`) at the same thread count."""

    baseline: str  # the baseline's label
    model: float
    total: float


@dataclass(frozen=True)
class LoadBreakdown:
    verify_ms: float  # manifest read + sha256 check
    open_ms: float  # the runtime's open


@dataclass(frozen=True)
class Samples:
    """Every timed run in ms, in round order (what the box plots draw)."""

    model: list[float]
    total: list[float]
    pre: list[float]
    post: list[float]


@dataclass(frozen=True)
class BenchResult:
    """One file of one bundle at one thread count: what it is, its times, memory and parity."""

    label: str  # "BUNDLE_DIR/FILE" (+ "@UNITS" for Core ML), unique in the run
    bundle: str
    file: str
    arch: str
    target: str
    format: str | None
    precision: str | None
    runtime: str
    compute_units: str | None  # Core ML only
    input_size: int | str  # the side of a square input, else "WxH"
    input_width: int
    input_height: int
    size_bytes: int | None
    threads: int | None  # None: the runtime's own choice (Core ML)
    load_ms: float
    load_breakdown: LoadBreakdown
    first_run_ms: float
    model_ms: Timing
    total_ms: Timing
    pre_ms: Timing
    post_ms: Timing
    pre_post_share: float | None  # (pre + post) / total of the medians: what the SDK adds around the model
    throughput: float
    model_throughput: float
    peak_rss_mb: float | None
    memory_scope: str | None  # "isolated" (a probe process) or "process" (the bench's own)
    faces: int
    parity: ParityRecord  # device_parity's: judged as the build judged the file
    ratio_to_baseline: BaselineRatio | None
    samples_ms: Samples

    @property
    def passed(self) -> bool:
        return self.parity.passed

    @property
    def where(self) -> str:
        """The label with its thread count, as parity failures are listed."""
        return self.label + (f" @{self.threads}t" if self.threads else "")

    def to_json(self) -> dict:
        return jsonable({f.name: _plain(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def from_json(cls, data: dict) -> BenchResult:
        nested = {"load_breakdown": LoadBreakdown, "model_ms": Timing, "total_ms": Timing, "pre_ms": Timing,
                  "post_ms": Timing, "ratio_to_baseline": BaselineRatio, "samples_ms": Samples}
        values = {f.name: data[f.name] for f in fields(cls)}
        for name, record in nested.items():
            if values[name] is not None:
                values[name] = record(**values[name])
        values["parity"] = ParityRecord.from_json(values["parity"], f"results[{data.get('label')!r}].parity")
        return cls(**values)


@dataclass(frozen=True)
class Frame:
    """The one frame every file detects on."""

    source: str
    width: int
    height: int


@dataclass(frozen=True)
class BenchSettings:
    runs: int
    warmup: int
    threads: list[int]
    schedule: str
    baseline: str  # the baseline's label
    ratio: str
    frame: Frame
    gc_paused_while_timing: bool


@dataclass
class BenchReport:
    """A whole run; `notes` grows while the report is written (a plot that could not be drawn)."""

    schema: str
    created: str
    device: DeviceInfo
    settings: BenchSettings
    results: list[BenchResult]
    parity: str  # "pass" | "fail"
    parity_failures: list[str]  # BenchResult.where of each failure
    process_peak_rss_mb: float | None
    wall_seconds: float
    notes: list[str]

    def to_json(self) -> dict:
        return jsonable({f.name: _plain(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def from_json(cls, data: Any) -> BenchReport:
        """A saved report; ValueError when `data` is not a complete SCHEMA report."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} report")
        try:
            values = {f.name: data[f.name] for f in fields(cls)}
            settings = values["settings"]
            values["settings"] = BenchSettings(**{**settings, "frame": Frame(**settings["frame"])})
            values["device"] = DeviceInfo(**values["device"])
            values["results"] = [BenchResult.from_json(result) for result in values["results"]]
        except (KeyError, TypeError) as err:
            raise ValueError(f"a {SCHEMA} report with a missing or unexpected field: {err}") from None
        return cls(**values)
