"""The model card's Markdown: AP in points, the recipe as run, quoted reference rows."""
from __future__ import annotations

import json

import pytest

from featherface.training.model_card import render_model_card
from featherface.widerface import WiderAP


def _cached_ap(easy: float, medium: float, hard: float) -> dict:
    """An AP result as the card's cache file holds it."""
    return WiderAP(easy, medium, hard, images=315, faces={"easy": 1, "medium": 2, "hard": 3}, protocol="letterboxed 640").to_json()


def _run(kd_per: str) -> dict:
    loss = {"task_weight": 1.0, "kd_weight": 1.0, "feature_weight": 0.0, "attention_weight": 0.0, "box_weight": 0.5,
            "landmark_weight": 0.1, "temperature_range": 0.0, "temperature_min": 1.0, "kd_per": kd_per,
            "phases": [{"end": 10, "freeze_backbone": True, "terms_off": []}]}
    config = {"input_size": 640, "batch_size": 16, "seed": 0, "lr": 0.002, "weight_decay": 0.0005, "warmup_fraction": 0.1,
              "epochs": 10, "teacher": {"arch": "retinaface-mnet025", "weights": None, "init_student_backbone": True, "loss": loss}}
    data = {"source": "wider", "used_images": 1239, "images": 1239, "faces": 6572, "dropped_invalid": 18,
            "dropped_zero_size": 0, "events": {"13--Interview": 569}}
    return {"config": config, "data": data, "epochs_done": 10, "stopped_early": False, "processes": 1, "threads": 1,
            "seconds": 1800.0, "images_per_second": 7.5, "history": [{"loss": 4.0}]}


def test_card_gives_ap_in_points_and_quotes_only_what_it_did_not_measure(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    results = {"v2-ultra@640": _cached_ap(0.9123, 0.8, 0.5), "retinaface-mnet025@640": _cached_ap(0.916, 0.876, 0.543)}
    card = render_model_card([_run("face")], results, weights, "v2-ultra", ["retinaface-mnet025"], ["featherface distill ..."])
    assert "| **v2-ultra** (this file) | ? | ? | not measured | 91.2 / 80.0 / 50.0 |" in card
    assert "| retinaface-mnet025 | ? | ? | not measured | 91.6 / 87.6 / 54.3 |" in card
    assert "| v1 (quoted) |" in card and "| YuNet (OpenCV, quoted) |" in card
    assert "per expected teacher face prior" in card and "its backbone started from the teacher's (retinaface-mnet025" in card
    assert "- Small faces (the *hard* column): faces below the smallest 16 px prior are rarely found.\n" in card
    measured_v1 = render_model_card([_run("prior")], {}, weights, "v2-ultra", ["v1"], ["cmd"])
    assert "| v1 (quoted) |" not in measured_v1 and "averaged over priors" in measured_v1


def test_a_two_stage_card_gives_each_stage_its_recipe_and_command_and_the_total_time(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    frozen, relu = _run("face"), _run("face")
    frozen["config"]["disabled_innovations"] = ["relu_backbone"]  # how the older runs recorded it
    relu["config"]["switched_innovations"] = ["level_heads"]
    relu["config"]["channels"] = 64
    relu["config"].update(init_weights="runs/v2_frozen/v2_ultra.pth", epochs=6,
                          augment={"crop_scales": [0.3, 1.0, 2.0], "mosaic": 0.5, "mosaic_grids": [2, 3, 4]})
    relu["config"]["teacher"]["loss"]["phases"] = [{"end": 6, "freeze_backbone": False, "terms_off": []}]
    relu["config"]["loss"] = {"loc_weight": 3.0}
    relu["seconds"] = 1200.0
    card = render_model_card([frozen, relu], {}, weights, "v2-ultra", [], ["stage one command", "stage two command"])
    assert "Training took 50 min in all (2 stages)" in card
    assert card.index("### Stage 1 of 2") < card.index("`stage one command`") < card.index("### Stage 2 of 2") < card.index("`stage two command`")
    assert "switches flipped from the default network of its day: relu_backbone" in card
    assert "switches flipped from the default network of its day: level_heads" in card
    assert card.count("a pyramid of 64 channels (`--channels`)") == 1  # the second stage's only
    assert "started from `runs/v2_frozen/v2_ultra.pth`, the previous stage's weights" in card
    assert "crops of 0.3, 1, 2 x the short side" in card and "crops above 1 zoom out" in card
    assert card.count("mosaic") == 1 and "with probability 0.5 a 2x2 or 3x3 or 4x4 grid of such crops instead (mosaic)" in card
    assert "6: trainable, none" in card and "10: frozen, none" in card
    assert card.count("3 x loc + 1 x conf") == 1 and card.count("2 x loc + 1 x conf + 1 x landmarks (smooth L1).") == 1
    with pytest.raises(ValueError, match="one command per run"):
        render_model_card([frozen, relu], {}, weights, "v2-ultra", [], ["only one"])


@pytest.mark.parametrize("case", ["no_run_json", "not_json", "not_a_run", "no_weights", "unknown_compare", "zero_threads"])
def test_card_cli_refuses_bad_input_in_one_line_before_evaluating(case, tmp_path, capsys):
    from featherface.training.model_card import main

    run_dir, weights, out = tmp_path / "run", tmp_path / "w.pth", tmp_path / "MODEL_CARD.md"
    run_dir.mkdir()
    weights.write_bytes(b"weights")
    if case == "not_json":
        (run_dir / "run.json").write_text("{")
    elif case != "no_run_json":
        run = {"epochs_done": 1} if case == "not_a_run" else _run("face")
        (run_dir / "run.json").write_text(json.dumps(run))
    if case == "no_weights":
        weights.unlink()
    argv = ["--run", str(run_dir), "--command", "cmd", "--weights", str(weights), "--out", str(out),
            "--compare", "no-such-net" if case == "unknown_compare" else "retinaface-mnet025"]
    if case == "zero_threads":
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--threads", "0"])
        status = exit_info.value.code
    else:
        status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 if case != "zero_threads" else "--threads: must be at least 1" in err
    expected = {"no_run_json": "run.json: no such file", "not_json": "run.json: not JSON", "not_a_run": "missing config, data, seconds",
                "no_weights": "no such weights file", "unknown_compare": "unknown architecture 'no-such-net'", "zero_threads": "at least 1"}
    assert expected[case] in err


def test_a_reader_meets_the_ap_and_the_limits_before_the_recipe_and_the_data_named_as_trained(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    card = render_model_card([_run("face")], {}, weights, "v2-ultra", [], ["cmd"])
    assert card.index("## WIDER_val AP") < card.index("## What it is not good at") < card.index("## Recipe")
    assert "- Accuracy in general: 1,239 photos of 1 WIDER FACE train events (the full set: 12,880 of 61)" in card
    assert "events absent from the 1 training events." in card
