"""`featherface eval` prints AP as people read it (issue 19): percent with one decimal, as the
report does, while --json keeps fractions in [0, 1] for programs."""
from __future__ import annotations

import json
import re

import pytest

from conftest import require_shared, run_cli

HUMAN_AP = re.compile(r"AP easy (\d+\.\d) %, medium (\d+\.\d) %, hard (\d+\.\d) % \(\d+ s\)$")


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """A WIDER FACE root with two shared validation images (linked, not copied)."""
    shared = require_shared("data/widerface")
    root = tmp_path_factory.mktemp("widerface")
    for name in ("ground_truth", "wider_face_split"):
        (root / name).symlink_to(shared / name)
    event = "13--Interview"
    target = root / "WIDER_val" / "images" / event
    target.mkdir(parents=True)
    for image in sorted((shared / "WIDER_val" / "images" / event).glob("*.jpg"))[:2]:
        (target / image.name).symlink_to(image)
    return root


@pytest.mark.shared
def test_eval_prints_ap_in_percent_and_json_keeps_fractions(two_images, tiny_onnx_bundle, tmp_path, capsys):
    argv = ["eval", "--bundle", str(tiny_onnx_bundle), "--data", str(two_images)]
    status, out, err = run_cli([*argv, "--out", str(tmp_path / "a"), "--json"], capsys)
    assert status == 0, err
    fractions = json.loads(out.strip().splitlines()[-1])
    status, out, err = run_cli([*argv, "--out", str(tmp_path / "b")], capsys)
    assert status == 0, err
    match = HUMAN_AP.search(out.strip().splitlines()[-1])
    assert match, out
    for setting, printed in zip(("easy", "medium", "hard"), match.groups()):
        assert 0.0 <= fractions[setting] <= 1.0
        assert float(printed) == pytest.approx(100 * fractions[setting], abs=0.051)


@pytest.mark.shared
def test_eval_progress_lines_off_a_terminal_a_bar_on_one_and_nothing_with_quiet(two_images, tiny_onnx_bundle, tmp_path,
                                                                                  capsys, monkeypatch):
    argv = ["eval", "--bundle", str(tiny_onnx_bundle), "--data", str(two_images)]
    status, _, err = run_cli([*argv, "--out", str(tmp_path / "a")], capsys)  # capsys: not a terminal
    assert status == 0, err
    assert "eval: 2/2 images in" in err and "eval: scoring Easy / Medium / Hard AP of 2 images" in err
    assert "%|" not in err

    status, _, err = run_cli([*argv, "--out", str(tmp_path / "b"), "--quiet"], capsys)
    assert status == 0, err
    assert "images in" not in err and "scoring" not in err and "%|" not in err

    monkeypatch.setattr("featherface.progress_bar.stderr_is_terminal", lambda: True)
    status, _, err = run_cli([*argv, "--out", str(tmp_path / "c")], capsys)
    assert status == 0, err
    assert re.search(r"eval: 100%\|.*\| 2/2 \[[\d:]+<[\d:]+", err), err  # done/total [elapsed<left]
    assert "images in" not in err and "eval: scoring Easy / Medium / Hard AP" in err
