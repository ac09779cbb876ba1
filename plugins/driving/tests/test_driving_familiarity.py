"""`driving.detect` knows its limits: every result says whether its input looks like the
generated road scenes the detector learned (the pooled outputs of its feature pyramid against
the familiarity model shipped with the weights), and its box scores are calibrated.

The figures (flagged rates, AUROC, overhead, ECE, mAP) come from ``benchmarks/familiarity.py``
and ``benchmarks/calibration.py``; these tests check the parts that make them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vlm_driving.calibration import box_matches, calibrated_scores, main, raw_threshold
from vlm_driving.detector import DETECTOR, Detector, DetectSettings, load_detector
from vlm_driving.features import detect_with_features, feature_layers
from vlm_driving.models import build_detector
from vlm_driving.scenes import scene, write_dataset

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

SAMPLES = Path(__file__).resolve().parents[1] / "vlm_driving" / "samples"
BUNDLED = SAMPLES.parent / "weights" / "detector"
#: Seeds of the generated inputs these tests use: held out of the detector's training (0-2999),
#: of its familiarity fit (700000-701999) and of the benchmark's acceptance (800000-800999).
TEST_SEED = 830_000
SMALL = {"backbone": "timm:lcnet_050", "class_names": ["car", "pedestrian"],
         "min_size": 64, "max_size": 96, "fpn_channels": 32, "head_convs": 1}  # fmt: skip


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    return vlm_home


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a busy 2-core machine two made each forward pass many times
    slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(inputs: list[Path], **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest("driving.detect", [str(p) for p in inputs], dict(params), device="cpu")
    return run_task(request, registry=load_registry(), keep_results=True)


def photo(tmp_path: Path) -> Path:
    from skimage import data

    path = tmp_path / "motorcycle_left.png"
    Image.fromarray(data.stereo_motorcycle()[0]).save(path)
    return path


def pan_video(pixels: np.ndarray, path: Path, frames: int = 8) -> Path:
    """A short MP4 sliding a 16:9 window across ``pixels``."""
    from vlm_core.export.video import encode_mp4

    h, w = pixels.shape[:2]
    ch, cw = min(h, w * 9 // 16), min(h, w * 9 // 16) * 16 // 9
    out = [
        np.asarray(Image.fromarray(pixels[:ch, x : x + cw]).resize((320, 180)))
        for x in np.linspace(0, w - cw, frames).astype(int)
    ]
    path.write_bytes(encode_mp4(np.stack(out), 25.0))
    return path


def test_every_result_says_whether_its_input_looks_like_the_training_scenes(
    tmp_path: Path,
) -> None:
    outcome = run([photo(tmp_path), SAMPLES / "street.png", SAMPLES / "drive.mp4"])
    verdicts = [result.ood for result in outcome.results]
    for ood in verdicts:
        assert ood is not None and set(ood) == {"flagged", "score", "threshold"}
        assert isinstance(ood["flagged"], bool) and ood["threshold"] > 0
    motorcycle, street, drive = verdicts
    assert motorcycle["flagged"] and motorcycle["score"] > 1.5 * motorcycle["threshold"]
    assert not street["flagged"] and not drive["flagged"]
    assert [s["ood"] for s in outcome.summaries] == verdicts  # what --json and the store carry


def test_a_video_of_a_real_photograph_gets_one_flagged_verdict(tmp_path: Path) -> None:
    from skimage import data

    video = pan_video(np.asarray(data.astronaut()), tmp_path / "astronaut.mp4")
    outcome = run([video])
    ood = outcome.results[0].ood
    assert ood is not None and ood["flagged"]
    assert len(outcome.results[0].outputs["tracks"]) == 8  # one verdict for 8 frames


def test_held_out_generated_scenes_are_familiar() -> None:
    detector = load_detector()
    frames = [scene(TEST_SEED + i).image for i in range(6)]
    frames += [scene(TEST_SEED + 10 + i, 1280, 720).image for i in range(2)]
    verdicts = detector.judge(np.stack([d.features for d in detector(frames)]))  # type: ignore[misc]
    assert sum(bool(v and v["flagged"]) for v in verdicts) <= 1, verdicts


def test_an_images_features_do_not_depend_on_the_other_images_of_its_call(
    tmp_path: Path,
) -> None:
    detector = load_detector()
    street = scene(TEST_SEED).image
    other = np.asarray(Image.open(photo(tmp_path)).convert("RGB"))
    together = detector([street, other])
    alone = [detector([street])[0], detector([other])[0]]
    for a, b in zip(together, alone, strict=True):
        assert a.features is not None and b.features is not None
        np.testing.assert_allclose(a.features, b.features, atol=1e-5)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


@pytest.mark.parametrize(("family", "levels"), [("fcos", 5), ("retinanet", 5), ("fasterrcnn", 3)])
def test_the_features_are_the_pyramid_outputs_every_family_has(family: str, levels: int) -> None:
    import torch

    model = build_detector({**SMALL, "family": family}).eval()
    layers = feature_layers(model)
    assert len(layers) == levels and all(n.startswith("backbone.fpn.") for n in layers)
    images = [torch.rand(3, 64, 96), torch.rand(3, 80, 64)]
    with torch.inference_mode():
        outputs, rows = detect_with_features(model, model, images)
    assert len(outputs) == 2 and rows is not None and rows.shape == (2, 32 * levels)


def test_weights_without_a_familiarity_model_say_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copy(BUNDLED / "model.safetensors", folder)
    sidecar = json.loads((BUNDLED / "model.json").read_text())
    sidecar["files"].pop("familiarity.safetensors")
    sidecar.pop("familiarity")
    (folder / "model.json").write_text(json.dumps(sidecar))
    outcome = run([photo(tmp_path)], weights=str(folder / "model.safetensors"))
    assert outcome.results[0].ood is None


# --- calibrated scores ---------------------------------------------------------------------


def test_calibrated_scores_keep_the_order_and_thresholds_map_back() -> None:
    raw = np.linspace(0.01, 0.99, 99).astype(np.float32)
    np.testing.assert_array_equal(calibrated_scores(raw, 1.0), raw)
    cal = calibrated_scores(raw, 0.25)
    assert (np.diff(cal) > 0).all() and cal[0] < raw[0] and cal[-1] > raw[-1]
    for threshold in (0.05, 0.3, 0.4, 0.9):
        back = calibrated_scores(np.asarray([raw_threshold(threshold, 0.25)]), 0.25)[0]
        assert back == pytest.approx(threshold, abs=1e-5)
    assert raw_threshold(0.0, 0.25) == 0.0 and raw_threshold(1.0, 0.25) == 1.0


def test_a_box_is_right_when_it_is_the_best_match_of_an_object_of_its_class() -> None:
    truth = np.asarray([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    found = np.asarray([[0, 0, 10, 10], [0, 0, 10, 9], [20, 0, 30, 10], [40, 0, 50, 10]])
    right = box_matches(found, np.asarray([0.9, 0.95, 0.8, 0.7]), np.asarray([0, 0, 1, 0]),
                        truth, np.asarray([0, 0]))  # fmt: skip
    # the 0.95 duplicate takes the first object; the exact box is the duplicate then; the third
    # box is of another class; the fourth covers nothing
    assert right.tolist() == [False, True, False, False]


def test_the_bundled_detector_reports_calibrated_scores_over_the_same_boxes() -> None:
    detector = load_detector()
    t = detector.score_temperature
    assert 0.05 < t < 1.0  # the raw FCOS scores are under-confident
    raw = Detector(detector.loaded, temperature=1.0)
    frame = scene(TEST_SEED + 1).image
    found = detector([frame], DetectSettings(score=0.4))[0]
    plain = raw([frame], DetectSettings(score=raw_threshold(0.4, t)))[0]
    np.testing.assert_allclose(found.xyxy, plain.xyxy)
    np.testing.assert_allclose(found.scores, calibrated_scores(plain.scores, t), rtol=1e-5)
    assert (found.scores >= 0.4 - 1e-6).all() and len(found.scores) > 0


def test_the_calibration_command_fits_and_records_a_temperature(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "held", 16, (400, 224), seed=TEST_SEED + 100)
    weights = tmp_path / "weights"
    shutil.copytree(BUNDLED, weights)
    assert main(["--data", str(data.parent), "--weights", str(weights), "--write"]) == 0
    entry = json.loads((weights / "model.json").read_text())["card"]["score_calibration"]
    assert 0.1 < entry["temperature"] < 0.5  # the bundled weights' own, 0.249, within noise
    assert entry["ece_after"] < entry["ece_before"] and entry["samples"] == 1600
    assert entry["data"]["path"] == "held"


def test_the_calibration_command_refuses_bad_data_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", str(tmp_path / "nowhere")]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error: ") and "nowhere" in out and "\n" not in out


# --- fitting ------------------------------------------------------------------------------


def test_fitting_sees_the_images_as_a_run_does(tmp_path: Path) -> None:
    """``purpose="fit"`` builds the recorded network and the in-domain items whole, and its
    features are the run's, to rounding."""
    import torch
    from vlm_driving.augment import collate
    from vlm_driving.params import DetectTrainParams
    from vlm_driving.train import build

    from vlm_core.tasks import TrainContext
    from vlm_core.weights import load_model

    data = write_dataset(tmp_path / "d", 4, [(400, 224), (640, 360)], seed=TEST_SEED + 200)
    bundled = load_model("", DETECTOR, fresh=True)
    ctx = TrainContext("driving.detect", "driving", "cpu", purpose="fit",
                       weights_card=bundled.card)  # fmt: skip
    setup = build(data, DetectTrainParams(val_fraction=0.25), ctx)
    assert setup.features is not None and setup.fit_data is not None
    model = setup.model
    model.load_state_dict(bundled.module.state_dict())
    model.eval()
    items = [setup.fit_data[i] for i in range(len(setup.fit_data))]  # type: ignore[arg-type]
    assert {tuple(image.shape) for image, _ in items} == {(3, 224, 400), (3, 360, 640)}
    with torch.inference_mode():
        fitted = setup.features(model, collate(items))
    frames = [(image * 255).round().byte().permute(1, 2, 0).numpy() for image, _ in items]
    ran = np.stack([d.features for d in load_detector()(frames)])  # type: ignore[misc]
    np.testing.assert_allclose(fitted.numpy(), ran, atol=1e-4)


def test_a_user_trained_checkpoint_comes_with_its_own_familiarity_file(tmp_path: Path) -> None:
    from vlm_core.tasks import TaskSpec
    from vlm_core.training.api import TrainRequest, train_task

    spec: TaskSpec = load_registry().tasks["driving.detect"]
    tiny = spec.tiny
    assert tiny is not None
    data = write_dataset(tmp_path / "data", **tiny.train_data_args)
    out = tmp_path / "run"
    train_task(TrainRequest("driving.detect", data, out, params=dict(tiny.train_params),
                            config={**tiny.train_config, "device": "cpu"}))  # fmt: skip
    best = next(out.glob("checkpoints/*/familiarity.safetensors"))
    sidecar = json.loads((best.parent / "model.json").read_text())
    assert "familiarity.safetensors" in sidecar["files"] and sidecar["familiarity"]["dims"] > 0
    outcome = run([photo(tmp_path)], weights=str(out), **tiny.params)
    ood = outcome.results[0].ood
    assert ood is not None and ood["flagged"]
