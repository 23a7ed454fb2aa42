"""The device SDK stays light: importing it (and its command-line entry points) never
pulls in torch, TensorFlow or coremltools, which a Raspberry Pi or a phone does not have."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "coremltools", "onnx2tf", "keras")

PROBE = """
import json, sys
import featherface.sdk.detector, featherface.sdk.pi, featherface.sdk.detect_command, featherface.sdk.bundle
import featherface.sdk.runtimes, featherface.sdk.sources, featherface.sdk.annotate
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
""" % (HEAVY,)


def test_sdk_imports_no_heavy_framework():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


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
