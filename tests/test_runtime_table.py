"""`featherface.sdk.runtimes.RUNTIMES` is the one table of runtime names: the file suffixes,
the `detect --runtime` choices, the bench's availability check, its device report and the
SDK's install hints all follow it, so adding or renaming a runtime is one row."""
from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from featherface import cli
from featherface.bench.device import RUNTIME_PACKAGES
from featherface.bench.targets import runtime_available
from featherface.config import TARGET_SPECS
from featherface.sdk.runtimes import RUNTIMES, TORCH, RuntimeUnavailable, require_torch, runtime_for, runtime_name_for

FILE_RUNTIMES = [runtime for runtime in RUNTIMES if runtime.opener]  # all but torch, which runs a checkpoint


def block(monkeypatch, modules: tuple[str, ...]) -> None:
    """Make `modules` (and any submodule already imported) unimportable, as on a device without them."""
    for module in modules:
        for loaded in [name for name in sys.modules if name.startswith(module + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, module, None)


def test_every_suffix_maps_to_the_runtime_users_know_it_by():
    expected = {".tflite": "litert", ".onnx": "onnxruntime", ".mlpackage": "coreml", ".pth": "torch", ".pt": "torch",
                ".safetensors": "torch"}
    assert {suffix: runtime.name for runtime in RUNTIMES for suffix in runtime.suffixes} == expected
    assert sum(len(runtime.suffixes) for runtime in RUNTIMES) == len(expected)  # no suffix twice
    for suffix, name in expected.items():
        assert runtime_name_for(f"dist/onnx/model{suffix}") == name


def test_every_target_default_file_opens_with_a_runtime_of_the_table():
    for target in TARGET_SPECS.values():
        assert runtime_for(target.default_file) in FILE_RUNTIMES, target.name


def test_an_unknown_suffix_is_refused_naming_every_suffix_of_the_table():
    with pytest.raises(ValueError) as refused:
        runtime_name_for("model.h5")
    assert str(refused.value).endswith("expected one of .tflite, .onnx, .mlpackage, .pth, .pt, .safetensors")


def test_detect_runtime_choices_are_the_table_names():
    [commands] = [a for a in cli.build_parser()._actions if a.dest == "command"]
    [runtime_option] = [a for a in commands.choices["detect"]._actions if a.dest == "runtime"]
    assert tuple(runtime_option.choices) == ("litert", "onnxruntime", "coreml", "torch")


@pytest.mark.parametrize("runtime", FILE_RUNTIMES, ids=lambda runtime: runtime.name)
def test_bench_gives_the_table_install_hint_for_a_missing_runtime(runtime, monkeypatch):
    monkeypatch.setattr("platform.system", lambda: "Darwin")  # Core ML: past the macOS check
    absent = replace(runtime, modules=("featherface_no_such_runtime",))
    assert runtime_available(absent) == runtime.not_installed
    assert runtime.install in runtime.not_installed


def test_bench_runs_no_checkpoint_and_reports_every_runtime_package_it_runs():
    assert runtime_available(TORCH) == "no runtime 'torch' in the bench"
    assert RUNTIME_PACKAGES == ("ai-edge-litert", "tflite-runtime", "onnxruntime", "coremltools", "numpy", "pillow")


@pytest.mark.parametrize("runtime", FILE_RUNTIMES, ids=lambda runtime: runtime.name)
def test_sdk_gives_the_same_hint_when_the_runtime_is_missing(runtime, monkeypatch, tmp_path):
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    block(monkeypatch, runtime.modules)
    with pytest.raises(RuntimeUnavailable) as refused:
        runtime.opener(tmp_path / f"model{runtime.suffixes[0]}")
    assert str(refused.value) == runtime.not_installed


def test_sdk_refuses_the_torch_runtime_with_the_table_hint_when_torch_is_missing(monkeypatch):
    block(monkeypatch, TORCH.modules)
    with pytest.raises(RuntimeUnavailable) as refused:
        require_torch()
    assert str(refused.value).startswith(TORCH.not_installed + ", or run")
