"""Typed bench records for tests: a result with the figures a test names and plausible
others, and a report holding results. No model is run."""
from __future__ import annotations

from featherface.bench.records import (
    SCHEMA,
    BaselineRatio,
    BenchReport,
    BenchResult,
    BenchSettings,
    DeviceInfo,
    Frame,
    LoadBreakdown,
    Samples,
    Timing,
)
from featherface.records import ParityRecord


def timing(p50: float) -> Timing:
    """Every run took `p50` ms."""
    return Timing(min=p50, p50=p50, p90=p50, p99=p50, mean=p50, max=p50, n=1)


def bench_result(label: str, threads: int | None = 1, total_p50: float = 10.0, model_p50: float = 5.0, status: str = "pass",
                 ratio: BaselineRatio | None = None, bundle: str = "onnx", file: str | None = None) -> BenchResult:
    return BenchResult(
        label=label, bundle=bundle, file=file or label.split("/")[-1], arch="v2-ultra", target="pi4", format="tflite",
        precision="fp32", runtime="litert", compute_units=None, input_size=640, input_width=640, input_height=640,
        size_bytes=1_000_000, threads=threads, load_ms=10.0, load_breakdown=LoadBreakdown(2.0, 8.0), first_run_ms=20.0,
        model_ms=timing(model_p50), total_ms=timing(total_p50), pre_ms=timing(1.0), post_ms=timing(1.0),
        pre_post_share=2.0 / total_p50, throughput=1000 / total_p50, model_throughput=1000 / model_p50, peak_rss_mb=90.0,
        memory_scope="isolated", faces=1, parity=ParityRecord(status, [] if status == "pass" else ["loc max abs error"]),
        ratio_to_baseline=ratio, samples_ms=Samples([model_p50], [total_p50], [1.0], [1.0]),
    )


A_PI = DeviceInfo(cpu="Cortex-A72", machine="aarch64", cores=4, usable_cores=4, memory_mb=3796.0, os="Linux-6.6-aarch64",
                  python="CPython 3.11.2", featherface="0.1.0", runtimes={"ai-edge-litert": "2.3.0"}, cpu_governor="ondemand",
                  cpu_max_mhz=1800)


def bench_report(results: list[BenchResult]) -> BenchReport:
    failed = [result.where for result in results if not result.passed]
    settings = BenchSettings(runs=1, warmup=0, threads=sorted({r.threads or 1 for r in results}), schedule="interleaved",
                             baseline=results[0].label if results else "", ratio="median over rounds",
                             frame=Frame("synthetic noise", 1280, 720), gc_paused_while_timing=True)
    return BenchReport(schema=SCHEMA, created="2026-12-01T10:00:00+00:00", device=A_PI, settings=settings,
                       results=results, parity="fail" if failed else "pass", parity_failures=failed, process_peak_rss_mb=100.0,
                       wall_seconds=1.0, notes=[])
