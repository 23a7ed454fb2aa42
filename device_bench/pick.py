"""`featherface bench --pick`: the fastest file that passed parity on this device becomes
its bundle's preferred file, and the manifest says who chose it, where and when."""
from __future__ import annotations

import time
from pathlib import Path

from featherface.records import PreferredBy
from featherface.sdk.bundle import read_manifest, write_manifest

from .records import BenchReport, BenchResult
from .report import fastest_passing


def bundle_choice(report: BenchReport, bundle: str) -> BenchResult | None:
    """`bundle`'s fastest passing result at the first thread count benched, or None."""
    results = [r for r in report.results if r.bundle == bundle]
    return fastest_passing(results, results[0].threads) if results else None


def pick(report: BenchReport) -> list[str]:
    """Write each benched bundle's choice into its manifest.json (atomically); the lines
    saying what was chosen. A bundle with no passing file keeps its manifest as it was."""
    lines = []
    for bundle in dict.fromkeys(r.bundle for r in report.results):
        best = bundle_choice(report, bundle)
        if best is None:
            lines.append(f"{bundle}: nothing picked, no file passed parity")
            continue
        timed = [r for r in report.results if r.bundle == bundle and r.threads == best.threads]
        manifest = read_manifest(bundle)
        manifest.preferred_file = best.file
        manifest.preferred_by = PreferredBy(
            "featherface bench --pick", report.device.line(), time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            threads=best.threads, model_p50_ms={r.file: r.model_ms.p50 for r in timed},
            detect_p50_ms={r.file: r.total_ms.p50 for r in timed},
        )
        write_manifest(Path(bundle), manifest)
        lines.append(f"{bundle}: preferred file is now {best.file} (detect p50 {best.total_ms.p50:.2f} ms, "
                     f"{best.threads or 'the runtime default'} thread(s))")
    return lines
