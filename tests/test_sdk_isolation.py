"""The device SDK stays light: importing it (and its command-line entry points) never
pulls in torch, TensorFlow or coremltools, which a Raspberry Pi or a phone does not have;
the SDK and the bench import with those and the build side (converters, quantization,
training) made unimportable, and `featherface report` runs without torch."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "coremltools", "onnx2tf", "keras")
BUILD_SIDE = ("featherface.converters", "featherface.quantization", "featherface.training")

PROBE = """
import json, sys
import featherface.sdk.detector, featherface.sdk.pi, featherface.sdk.detect_command, featherface.sdk.bundle
import featherface.sdk.runtimes, featherface.sdk.sources, featherface.sdk.annotate
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
""" % (HEAVY,)

# Makes `blocked` unimportable in the child process, as on a device without them.
BLOCKER = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {heavy!r} or name.startswith({build_side!r}):
            raise ImportError(f"{{name}} is blocked in this test (absent on a device)")
sys.meta_path.insert(0, Blocked())
"""

DEVICE_SIDE = (
    "featherface.sdk", "featherface.sdk.detector", "featherface.sdk.pi", "featherface.sdk.detect_command",
    "featherface.sdk.bundle", "featherface.sdk.runtimes", "featherface.sdk.sources", "featherface.sdk.annotate",
    "featherface.verify", "featherface.verify.files", "featherface.verify.check", "featherface.verify.golden",
    "featherface.verify.parity",
    "featherface.bench", "featherface.bench.cli", "featherface.bench.runner", "featherface.bench.targets",
    "featherface.bench.parity", "featherface.bench.report", "featherface.bench.export_golden",
    "featherface.bench.memprobe", "featherface.bench.soak", "featherface.bench.coreml", "featherface.bench.device",
    "featherface.bench.records", "featherface.bench.pick",
)


def _blocked_child(code: str, blocked_prefixes: tuple[str, ...] = BUILD_SIDE, **kwargs) -> subprocess.CompletedProcess:
    prelude = BLOCKER.format(heavy=HEAVY, build_side=blocked_prefixes)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120, **kwargs)


def test_sdk_imports_no_heavy_framework():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_sdk_and_bench_import_with_torch_tensorflow_and_the_converters_blocked():
    code = "import importlib\n" + "".join(f"importlib.import_module({name!r})\n" for name in DEVICE_SIDE) + "print('imported')\n"
    result = _blocked_child(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_the_blocker_really_blocks():
    """The test above proves nothing if the blocker lets the build side through."""
    result = _blocked_child("import featherface.converters.build\n")
    assert result.returncode != 0 and "is blocked in this test" in result.stderr


def test_report_runs_without_torch(tiny_onnx_bundle, tmp_path):
    bundle = shutil.copytree(tiny_onnx_bundle, tmp_path / "onnx")
    code = f"from featherface.cli import main\nraise SystemExit(main(['report', {str(bundle)!r}]))\n"
    result = _blocked_child(code, blocked_prefixes=())
    assert result.returncode == 0, result.stderr
    assert (bundle / "parity.html").is_file() and "model.onnx" in (bundle / "parity.md").read_text()


def test_cli_parser_imports_no_heavy_framework():
    """`featherface detect --help` and friends must start fast on a device."""
    probe = (
        "import json, sys; from featherface.cli import build_parser; build_parser()\n"
        "import featherface.sdk.pi as pi\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
