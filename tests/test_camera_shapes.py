"""Camera-shaped (non-square) inputs and the SDK's frame path: priors and decoding against
hand-computed cases, the letterbox round trip for landscape and portrait frames, the
OpenCV and Pillow resizers against the parity bars, the reused INT8/float input buffer,
video mode, and a non-square bundle end to end."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image, require_shared
from featherface import cli
from featherface.config import DEPLOY_THRESHOLDS, MEAN_BGR, PARITY_THRESHOLDS, PRIORS, InputSize, Thresholds
from featherface.priors import anchor_count, make_priors
from featherface.sdk import preprocess as pre
from featherface.sdk.box_coding import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks
from featherface.sdk.faces import postprocess_arrays
from featherface.sdk.runtimes import quantize_to
from featherface.verify.parity import Detections, detection_agreement

CAMERA = InputSize(640, 480)
# A full-INT8 file's input tensor as LiteRT describes it (scale and zero point of RetinaFace's).
INT8_INPUT = {"dtype": np.int8, "quantization": (1.0572758913040161, -14)}


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("640", InputSize(640, 640)), ("640x480", InputSize(640, 480)),
                                            ("1280X704", InputSize(1280, 704)), (" 96x64 ", InputSize(96, 64))])
def test_input_size_reads_n_and_width_x_height(text, expected):
    assert InputSize.parse(text) == expected


@pytest.mark.parametrize("text, words", [("640x479", "height must be a positive multiple of 32, got 479 (nearest: 448 or 480)"),
                                         ("1280x720", "nearest: 704 or 736"), ("640x480x3", "expected N or WxH"),
                                         ("x480", "expected N or WxH"), ("0x480", "width must be a positive multiple of 32")])
def test_input_size_refuses_what_the_pyramid_cannot_tile(text, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        InputSize.parse(text)


def test_a_square_size_still_prints_as_one_number():
    assert (str(InputSize(640, 640)), str(CAMERA)) == ("640", "640x480")


def test_build_refuses_a_size_off_the_stride_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's own exit: usage, then the one error line
        cli.main(["build", "--target", "onnx", "--arch", "v2-ultra", "--input-size", "640x479", "--out", str(tmp_path / "d")])
    status = stop.value.code
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("featherface build: error: argument --input-size: input height must be a positive multiple of 32")
    assert not (tmp_path / "d").exists()


# --- priors and decoding, by hand -------------------------------------------------------------


def test_priors_of_a_wide_input_by_hand():
    # 64 wide, 32 tall: level 0 (step 8) is 4 rows x 8 columns, level 1 2 x 4, level 2 1 x 2;
    # two min sizes per cell: 64 + 16 + 4 anchors.
    priors = make_priors(32, 64)
    assert len(priors) == anchor_count(InputSize(64, 32)) == 84
    np.testing.assert_allclose(priors[0], [0.5 * 8 / 64, 0.5 * 8 / 32, 16 / 64, 16 / 32])
    np.testing.assert_allclose(priors[1], [0.0625, 0.125, 32 / 64, 32 / 32])
    np.testing.assert_allclose(priors[2], [1.5 * 8 / 64, 0.125, 0.25, 0.5])  # row 0, column 1
    np.testing.assert_allclose(priors[16], [0.0625, 1.5 * 8 / 32, 0.25, 0.5])  # row 1, column 0
    np.testing.assert_allclose(priors[64], [0.5 * 16 / 64, 0.5 * 16 / 32, 64 / 64, 64 / 32])
    np.testing.assert_allclose(priors[-1], [1.5 * 32 / 64, 0.5, 512 / 64, 512 / 32])


def test_decoding_on_a_wide_input_by_hand():
    priors = make_priors(32, 64)
    loc = np.zeros((84, 4), np.float32)
    loc[0] = (1.0, -1.0, 0.0, np.log(2) / PRIORS.variances[1])  # shift by one variance, double the height
    landmarks = np.zeros((84, 10), np.float32)
    landmarks[0, :2] = (1.0, 1.0)
    pixels = np.array([64, 32, 64, 32])
    box = decode_boxes(loc, priors, PRIORS.variances)[0] * pixels
    # centre (0.0625 + 0.1 x 0.25) x 64 = 5.6, (0.125 - 0.1 x 0.5) x 32 = 2.4; size 0.25 x 64 = 16 by 2 x 0.5 x 32 = 32
    np.testing.assert_allclose(box, [5.6 - 8, 2.4 - 16, 5.6 + 8, 2.4 + 16], atol=1e-5)
    point = decode_landmarks(landmarks, priors, PRIORS.variances)[0, :2] * pixels[:2]
    np.testing.assert_allclose(point, [5.6, (0.125 + 0.1 * 0.5) * 32], atol=1e-5)


def test_postprocessing_keeps_a_wide_inputs_width_and_height_apart():
    priors = make_priors(32, 64)
    conf = np.zeros((84, 2), np.float32)
    conf[64] = (0.1, 0.9)  # level 1, first cell: a 64 x 64 pixel prior centred at (8, 8)
    boxes, scores, _ = postprocess_arrays(np.zeros((84, 4), np.float32), conf, np.zeros((84, 10), np.float32), priors,
                                          pre.Letterbox(1.0, 0, 0, 64, 32), 32, 64, DEPLOY_THRESHOLDS, PRIORS.variances)
    np.testing.assert_allclose(boxes, [[0, 0, 40, 32]])  # (-24, -24, 40, 40) clipped to the 64 x 32 image
    np.testing.assert_allclose(scores, [0.9])


# --- letterbox into a non-square input --------------------------------------------------------


@pytest.mark.parametrize("frame, content", [((720, 1280), (360, 640)), ((1280, 720), (480, 270)), ((480, 640), (480, 640)),
                                            ((100, 50), (480, 240))])
def test_letterbox_fits_landscape_and_portrait_frames_whole(frame, content):
    canvas, box = pre.letterbox(noise_image(*frame), CAMERA)
    assert canvas.shape == (480, 640, 3)
    assert pre.content_size(*frame, CAMERA)[:2] == content
    assert box.scale == min(640 / frame[1], 480 / frame[0])
    fill = tuple(int(v) for v in MEAN_BGR[::-1])  # the mean colour: zero once the mean is subtracted
    assert (canvas[content[0]:] == fill).all() and (canvas[:, content[1]:] == fill).all()


@pytest.mark.parametrize("frame", [(720, 1280), (1280, 720), (1024, 1280), (333, 500)])
def test_faces_round_trip_through_a_non_square_input(frame):
    """A face in frame pixels -> model pixels -> offsets against the 640x480 priors -> decoded
    and mapped back: the same box and landmarks, for portrait and landscape frames."""
    height, width = frame
    box = pre.letterbox(noise_image(height, width), CAMERA)[1]
    face = np.array([0.3 * width, 0.4 * height, 0.5 * width, 0.7 * height])
    points = np.array([0.35, 0.5, 0.45, 0.5, 0.4, 0.55, 0.36, 0.62, 0.44, 0.62]) * np.tile([width, height], 5)
    priors = make_priors(480, 640)
    scale = np.tile([640, 480], 5)
    centre = box.to_model(face).reshape(2, 2).mean(axis=0) / (640, 480)
    best = int(np.argmin(((priors[:, :2] - centre) ** 2).sum(axis=1)))  # the prior nearest the face, as training matches
    loc = np.zeros((len(priors), 4), np.float32)
    landmarks = np.zeros((len(priors), 10), np.float32)
    loc[best] = encode_boxes(box.to_model(face)[None] / scale[:4], priors[best:best + 1], PRIORS.variances)[0]
    landmarks[best] = encode_landmarks(box.to_model(points)[None] / scale, priors[best:best + 1], PRIORS.variances)[0]
    conf = np.zeros((len(priors), 2), np.float32)
    conf[best] = (0.0, 1.0)
    boxes, _, found = postprocess_arrays(loc, conf, landmarks, priors, box, 480, 640, DEPLOY_THRESHOLDS, PRIORS.variances)
    np.testing.assert_allclose(boxes[0], face, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(found[0], points, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(box.to_image(box.to_model(points)), points)


# --- resizers ------------------------------------------------------------------------------


def test_opencv_and_pillow_resize_to_the_same_content_size_and_close_pixels():
    frame = np.asarray(Image.fromarray(noise_image(64, 80)).resize((1280, 1024), Image.Resampling.BILINEAR))
    fast = pre.letterbox(frame, CAMERA, resizer="opencv")[0]
    fallback = pre.letterbox(frame, CAMERA, resizer="pillow")[0]
    assert np.abs(fast.astype(int) - fallback).mean() < 2.0


@pytest.mark.shared
def test_opencv_and_pillow_resizing_find_the_same_faces_within_the_parity_bars(widerface_root):
    """RetinaFace (PyTorch FP32) at 640x480 on real photos, each resized by both: the fast
    path's faces against the fallback's, held to the FP32 file's parity bar."""
    torch = pytest.importorskip("torch")
    from featherface.model.registry import create_model

    model = create_model("retinaface-mnet025", require_shared("weights/retinaface_mnet025.pth"))
    photos = sorted((widerface_root / "WIDER_val" / "images").glob("*/*.jpg"))[::40][:8]
    floor = Thresholds(score=DEPLOY_THRESHOLDS.score - 0.1, nms_iou=DEPLOY_THRESHOLDS.nms_iou, top_k=DEPLOY_THRESHOLDS.top_k)
    priors = make_priors(480, 640)
    found = {}
    for resizer in ("opencv", "pillow"):
        found[resizer] = []
        for photo in photos:
            rgb = np.asarray(Image.open(photo).convert("RGB"))
            tensor, box = pre.preprocess(rgb, CAMERA, resizer=resizer)
            with torch.no_grad():
                loc, conf, landmarks = (t[0].numpy() for t in model(torch.from_numpy(tensor)))
            found[resizer].append(Detections(*postprocess_arrays(loc, conf, landmarks, priors, box, 480, 640, floor, PRIORS.variances)))
    agreement = detection_agreement(found["pillow"], found["opencv"], DEPLOY_THRESHOLDS.score)
    bar = PARITY_THRESHOLDS["fp32"]
    assert agreement.robust_recall >= bar.min_recall and agreement.robust_precision >= bar.min_precision, agreement
    assert sum(len(d.scores) for d in found["pillow"]) > 20  # enough faces to mean something


# --- the reused input buffer -----------------------------------------------------------------


FRAMES = [(1024, 1280), (1280, 720), (1024, 1280), (480, 640), (100, 90)]  # the content size changes back and forth


@pytest.mark.parametrize("opencv", [True, False], ids=["opencv", "numpy"])
@pytest.mark.parametrize("layout, dtype", [("NHWC", np.int8), ("NHWC", np.float32), ("NCHW", np.float32)])
def test_frame_writer_holds_bit_for_bit_what_preprocess_and_quantize_give(layout, dtype, opencv, monkeypatch):
    if not opencv:
        monkeypatch.setattr(pre, "_opencv", lambda: None)
    detail = {**INT8_INPUT, "dtype": dtype} if dtype == np.int8 else {"dtype": np.float32, "quantization": (0.0, 0)}
    writer = pre.FrameWriter(CAMERA, MEAN_BGR, layout, np.dtype(dtype), lambda x: quantize_to(x, detail))
    first = None
    for i, shape in enumerate(FRAMES):
        frame = noise_image(*shape, seed=i)
        tensor, box = writer.write(frame)
        expected, expected_box = pre.preprocess(frame, CAMERA, layout=layout)
        assert tensor.dtype == dtype and box == expected_box
        np.testing.assert_array_equal(tensor, quantize_to(expected, detail))
        first = tensor if first is None else first
        assert tensor is first  # one buffer for the whole stream


def test_detect_reuses_one_input_buffer_and_video_mode_keeps_timestamps(tiny_onnx_bundle):
    from featherface.sdk import Detector, VideoFaces

    with Detector.load(tiny_onnx_bundle) as detector:
        first, _ = detector.frame_input(noise_image(48, 80))
        again, _ = detector.frame_input(noise_image(90, 40, seed=1))
        assert again is first
        frames = [(0.0, noise_image(48, 80)), (33.3, noise_image(48, 80, seed=2)), (66.7, noise_image(60, 80, seed=3))]
        results = list(detector.detect_video(frames))
        assert [r.timestamp_ms for r in results] == [0.0, 33.3, 66.7]
        assert all(isinstance(r, VideoFaces) for r in results)
        assert results[1].faces == detector.detect(frames[1][1])
        with pytest.raises(ValueError, match="timestamps must increase: 66.7 ms after 66.7 ms"):
            detector.detect_for_video(noise_image(48, 80), 66.7)


def test_detect_timed_finds_what_detect_finds_and_times_each_stage_within_the_call(tiny_onnx_bundle):
    """featherface-pi and the bench time `detect` through `detect_timed`: the same faces, and
    three stage times, none negative, that together fit inside the call's own wall time."""
    from featherface.config import Thresholds
    from featherface.sdk import Detector

    low = Thresholds(score=0.01, nms_iou=0.4, top_k=50)  # an untrained tiny network: keep some faces
    with Detector.load(tiny_onnx_bundle) as detector:
        image = noise_image(48, 80, seed=4)
        tensor, letterbox = detector.frame_input(image)
        expected = detector.decode(detector.run_input(tensor), 0, letterbox, low)
        started = time.perf_counter()
        faces, seconds = detector.detect_timed(image, thresholds=low)
        elapsed = time.perf_counter() - started
        assert faces == expected and len(faces) > 0
        assert detector.detect_timed(image)[0] == detector.detect(image)
    assert min(seconds.pre, seconds.model, seconds.post) >= 0
    assert seconds.total <= elapsed


# --- a non-square bundle end to end ----------------------------------------------------------


def test_a_non_square_onnx_bundle_is_built_checked_and_detects(tmp_path):
    torch = pytest.importorskip("torch")
    from featherface.converters.build import build_bundle, find_images, make_parity_set
    from featherface.model.registry import get_variant
    from featherface.sdk import Detector
    from featherface.verify.golden import load_golden

    images = tmp_path / "images"
    images.mkdir()
    for i, shape in enumerate([(48, 80), (80, 48)]):
        Image.fromarray(noise_image(*shape, seed=i)).save(images / f"{i}.png")
    torch.manual_seed(0)
    model = get_variant("v2-ultra").build().eval()
    size = InputSize(96, 64)
    parity = make_parity_set(model, find_images(images, 2), size)
    manifest = build_bundle("onnx", model, "v2-ultra", None, parity, size, tmp_path / "dist", lambda _: None)
    bundle = tmp_path / "dist" / "onnx"
    written = json.loads((bundle / "manifest.json").read_text())
    assert (written["input"]["width"], written["input"]["height"]) == (96, 64)
    assert all(o["shape"][1] == anchor_count(size) for o in written["outputs"])
    assert all(entry.parity.passed for entry in manifest.files)
    assert load_golden(bundle, manifest).inputs.shape[1:] == (3, 64, 96)
    with Detector.load(bundle) as detector:
        assert detector.spec.input_size == size
        tensor, box = detector.frame_input(noise_image(200, 100))
        assert tensor.shape == (1, 3, 64, 96) and box.scale == min(96 / 100, 64 / 200)
        assert isinstance(detector.detect(noise_image(200, 100)), list)


def test_orientation_keeps_the_photos_wider_or_taller_than_square(tmp_path):
    from featherface.evaluation import oriented

    images = []
    for name, (height, width) in {"wide": (48, 80), "tall": (80, 48), "square": (64, 64)}.items():
        Image.fromarray(noise_image(height, width)).save(tmp_path / f"{name}.jpg")
        images.append(("event", name, tmp_path / f"{name}.jpg"))
    assert [name for _, name, _ in oriented(images, "landscape")] == ["wide"]
    assert [name for _, name, _ in oriented(images, "portrait")] == ["tall"]
    assert oriented(images, None) == images
    with pytest.raises(ValueError, match="orientation must be one of"):
        oriented(images, "square")
