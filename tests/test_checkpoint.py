"""The checkpoint loader: published weights load strictly, known quirks are tolerated,
and untrusted, damaged or mismatched files are refused with a CheckpointError."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from featherface.model.checkpoint import (
    CheckpointError,
    load_backbone_weights,
    load_weights,
    read_state_dict,
    save_weights,
)
from featherface.model.registry import VARIANTS, create_model, get_variant

PUBLISHED = {
    "v1": "featherface_v1_paper.pth",
    "v1-489k": "featherface_v1_489k.pth",
    "retinaface-mnet025": "retinaface_mnet025.pth",
}


def forward_small(model: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, ...]:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 50.0
    with torch.no_grad():
        return model.eval()(x)


def plain_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- published checkpoints --------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_published_checkpoint_loads_strictly_into_its_variant(arch, shared_weights):
    path = shared_weights / PUBLISHED[arch]
    model = create_model(arch, path)
    assert not model.training
    state = model.state_dict()
    raw = plain_tensors(path)
    for key, value in raw.items():
        if key.endswith(("total_ops", "total_params")):
            continue
        assert torch.equal(state[key.removeprefix("module.")], value), key
    loc, conf, landmarks = forward_small(model)
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all() and torch.isfinite(landmarks).all()


def test_paper_checkpoint_really_contains_thop_buffers(shared_weights):
    raw = plain_tensors(shared_weights / PUBLISHED["v1"])
    assert any(k.endswith("total_ops") for k in raw)
    state = read_state_dict(shared_weights / PUBLISHED["v1"])
    assert not any(k.endswith(("total_ops", "total_params")) for k in state)


def test_module_prefix_and_thop_buffers_are_tolerated(shared_weights, tmp_path):
    raw = read_state_dict(shared_weights / PUBLISHED["retinaface-mnet025"])
    wrapped = {f"module.{k}": v for k, v in raw.items()}
    wrapped["total_ops"] = torch.zeros(1, dtype=torch.float64)
    wrapped["total_params"] = torch.zeros(1, dtype=torch.float64)
    wrapped["module.body.total_ops"] = torch.zeros(1, dtype=torch.float64)
    wrapped["module.ssh1.conv3X3.0.total_params"] = torch.zeros(1, dtype=torch.float64)
    path = tmp_path / "wrapped.pth"
    torch.save(wrapped, path)
    reference = create_model("retinaface-mnet025", shared_weights / PUBLISHED["retinaface-mnet025"])
    model = create_model("retinaface-mnet025", path)
    for a, b in zip(forward_small(reference), forward_small(model)):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "arch,file_arch",
    [("v1", "retinaface-mnet025"), ("retinaface-mnet025", "v1-489k"), ("v1-489k", "v1"), ("v2-ultra", "v1")],
)
def test_checkpoint_of_another_variant_is_refused_naming_keys_and_the_right_arch(arch, file_arch, shared_weights):
    path = shared_weights / PUBLISHED[file_arch]
    with pytest.raises(CheckpointError) as caught:
        create_model(arch, path)
    message = str(caught.value)
    assert str(path) in message
    assert f"does not match architecture {arch}" in message
    assert "unexpected keys" in message  # every pair here has keys the target lacks
    if (arch, file_arch) != ("v1-489k", "v1"):  # v1 holds every key of v1-489k (other shapes)
        assert "missing keys" in message
    else:
        assert "shape mismatches" in message
    assert f"most likely belongs to --arch {file_arch}" in message


def test_shape_mismatch_is_named(tmp_path):
    state = get_variant("v2-ultra").build().state_dict()
    state["body.stage1.0.0.weight"] = torch.zeros(4, 3, 3, 3)
    path = tmp_path / "reshaped.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): body\.stage1\.0\.0\.weight"):
        create_model("v2-ultra", path)


# --- untrusted and damaged files --------------------------------------------------------


class CreatesMarkerFile:
    """Unpickling this calls open(marker, 'w'): a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_marker_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    """Control: the payload used below does create its file under a plain pickle.load."""
    marker = tmp_path / "control-marker"
    path = tmp_path / "control.pkl"
    with open(path, "wb") as f:
        pickle.dump({"w": torch.zeros(1), "x": CreatesMarkerFile(marker)}, f)
    assert not marker.exists()
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("container", ["torch-zip", "torch-legacy", "plain-pickle"])
def test_checkpoint_that_would_run_code_is_refused_without_running_it(container, tmp_path):
    marker = tmp_path / "pwned"
    payload = {"body.stage1.0.0.weight": torch.zeros(8, 3, 3, 3), "evil": CreatesMarkerFile(marker)}
    path = tmp_path / "evil.pth"
    if container == "torch-zip":
        torch.save(payload, path)
    elif container == "torch-legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match="refused"):
        create_model("v2-ultra", path)
    assert not marker.exists()


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.99])
def test_truncated_zip_checkpoint_is_refused(fraction, tmp_path):
    full = save_weights(get_variant("v2-ultra").build(), tmp_path / "full.pth")
    data = full.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError):
        create_model("v2-ultra", path)


def test_truncated_published_checkpoint_is_refused(shared_weights, tmp_path):
    data = (shared_weights / PUBLISHED["retinaface-mnet025"]).read_bytes()
    for cut in (len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            create_model("retinaface-mnet025", path)


@pytest.mark.parametrize("cut", [1, 3, 16, 18, 19])
def test_truncated_legacy_format_checkpoint_is_refused_with_checkpoint_error(cut, tmp_path):
    full = tmp_path / "legacy.pth"
    torch.save(get_variant("v2-ultra").build().state_dict(), full, _use_new_zipfile_serialization=False)
    path = tmp_path / "truncated.pth"
    path.write_bytes(full.read_bytes()[:cut])
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_nan_filled_checkpoint_is_refused(tmp_path):
    state = get_variant("v2-ultra").build().state_dict()
    poisoned = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / "nan.pth"
    torch.save(poisoned, path)
    with pytest.raises(CheckpointError, match="non-finite"):
        create_model("v2-ultra", path)


def test_single_inf_weight_is_refused_and_the_model_is_left_untouched(tmp_path):
    model = get_variant("v2-ultra").build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = get_variant("v2-ultra").build().state_dict()
    state["lateral.0.0.weight"][0, 0, 0, 0] = float("inf")
    path = tmp_path / "inf.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="lateral.0.0.weight"):
        load_weights(model, path, arch="v2-ultra")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_missing_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "nowhere" / "v1.pth"
    with pytest.raises(CheckpointError, match="not found") as caught:
        create_model("v1", path)
    assert str(path) in str(caught.value)


def test_directory_instead_of_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError):
        create_model("v1", tmp_path)


def test_non_state_dict_pickle_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        create_model("v2-ultra", path)


def test_non_tensor_entry_is_refused(tmp_path):
    state = dict(get_variant("v2-ultra").build().state_dict())
    state["epoch"] = 3
    path = tmp_path / "with_epoch.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="'epoch'"):
        create_model("v2-ultra", path)


def test_training_archive_with_state_dict_key_loads(tmp_path):
    model = get_variant("v2-ultra").build()
    path = tmp_path / "archive.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = create_model("v2-ultra", path)
    for a, b in zip(forward_small(model), forward_small(loaded)):
        assert torch.equal(a, b)


# --- safetensors ------------------------------------------------------------------------


def test_safetensors_copy_of_published_checkpoint_loads(shared_weights, tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file
    source = shared_weights / PUBLISHED["v1-489k"]
    state = {k: v.contiguous() for k, v in read_state_dict(source).items()}
    path = tmp_path / "v1_489k.safetensors"
    save_file(state, str(path))
    from_pth = create_model("v1-489k", source)
    from_safetensors = create_model("v1-489k", path)
    for a, b in zip(forward_small(from_pth), forward_small(from_safetensors)):
        assert torch.equal(a, b)


def test_safetensors_of_wrong_variant_is_refused(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file
    state = {k: v.contiguous() for k, v in get_variant("v2-ultra").build().state_dict().items()}
    path = tmp_path / "v2.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="most likely belongs to --arch v2-ultra"):
        create_model("retinaface-mnet025", path)


def test_corrupt_safetensors_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError):
        create_model("v2-ultra", path)


# --- ImageNet backbone ------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_imagenet_backbone_tar_loads_into_every_variant(arch, shared_weights):
    tar = shared_weights / "mobilenetV1X0.25_imagenet.tar"
    archive = torch.load(tar, map_location="cpu", weights_only=True)["state_dict"]
    expected = {k.removeprefix("module."): v for k, v in archive.items() if not k.startswith("module.fc.")}
    assert any(k.startswith("module.fc.") for k in archive)

    torch.manual_seed(0)
    model = get_variant(arch).build()
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    rest_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("body.")}
    assert not all(torch.equal(body_before[k], v) for k, v in expected.items())

    assert load_backbone_weights(model, tar) is model
    body = model.body.state_dict()
    assert set(body) == set(expected)
    for key, value in expected.items():
        assert torch.equal(body[key], value), key
    for key, value in model.state_dict().items():
        if not key.startswith("body."):
            assert torch.equal(value, rest_before[key]), key


def test_full_checkpoint_is_refused_as_backbone_weights(shared_weights):
    model = get_variant("v2-ultra").build()
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_backbone_weights(model, shared_weights / PUBLISHED["retinaface-mnet025"])
