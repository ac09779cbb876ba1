"""Explaining one box of `driving.detect` (vlm_driving.explain_target): the score explained is
the reported one, every declared method maps it on the image's grid, and the bad choices are
one-line usage errors.

The default tier uses a small generated scene (320x180, seed 940000, outside every seed range
the plugin trains, calibrates or measures on) seen at ``input_size=128`` so that Occlusion's
~240 passes take ~3 s on one CPU core; the FCOS position and the ROI paths of the other
families are checked on small randomly initialised detectors.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from vlm_driving.calibration import calibrated_scores
from vlm_driving.classes import CLASSES
from vlm_driving.detect import as_boxes, detect_images
from vlm_driving.detector import load_detector
from vlm_driving.explain_target import EXPLAINERS, box_target, choose_box, detect_target
from vlm_driving.models import build_detector, set_postprocess
from vlm_driving.params import DetectParams
from vlm_driving.scenes import scene

from vlm_core.errors import ParameterError, UsageError
from vlm_core.explain.attribution import explain_target
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.tasks import RunContext
from vlm_core.types import Boxes, Image, Video

SEED = 940000
INPUT_SIZE = 128
#: The forward value of the unperturbed image against the reported score. The score is read
#: from the very position (FCOS) or proposal (Faster R-CNN) the box came from, through the same
#: layers, so only float32 rounding separates them: the batch-of-one forward here and the run's
#: forward sum in different orders, and the calibration is float64 numpy in the run and float32
#: torch here (~1e-7 relative). 1e-4 is three orders of magnitude above that and far below
#: any difference a wrong position, class or temperature gives (> 1e-2 in practice).
SCORE_TOL = 1e-4


@pytest.fixture(scope="module")
def detector():  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)  # the shared CPU; the times in the module docstring are one core
    return load_detector()


@pytest.fixture(scope="module")
def street(detector):  # type: ignore[no-untyped-def]
    image = Image(pixels=scene(SEED, 320, 180).image, name="street")
    params = DetectParams(input_size=INPUT_SIZE)
    ((outputs, _),) = detect_images(detector, [image], params)
    boxes = outputs["detections"]
    assert len(boxes.scores) >= 2, "the test scene should hold at least two boxes"
    return image, boxes, params


def _ctx() -> RunContext:
    return RunContext(task="driving.detect", plugin="driving", requested_device="cpu")


def test_the_unperturbed_image_gives_each_boxs_reported_score(detector, street) -> None:
    image, boxes, _ = street
    for index in range(len(boxes.scores)):
        target = box_target(detector, image, boxes, index, input_size=INPUT_SIZE)
        with torch.no_grad():
            value = float(target.forward(target.inputs)[0])
        assert abs(value - float(boxes.scores[index])) <= SCORE_TOL, (index, value)
        assert target.extra is not None and target.extra["match_px"] < 0.5
        assert target.extra["box_index"] == index and target.extra["label"] == boxes.labels[index]
        assert target.extra["box"] == pytest.approx(boxes.xyxy[index].tolist(), abs=0.01)
        assert target.what == f"score of box {index} '{boxes.labels[index]}' " + (
            f"({boxes.scores[index]:.2f})"
        )


def test_the_blurred_baseline_removes_the_box(detector, street) -> None:
    image, boxes, _ = street
    target = box_target(detector, image, boxes, 0, input_size=INPUT_SIZE)
    assert isinstance(target.baseline, torch.Tensor)
    assert target.baseline.shape == target.inputs.shape
    with torch.no_grad():
        assert float(target.forward(target.baseline)[0]) < 0.1 * float(boxes.scores[0])


@pytest.mark.parametrize("method", EXPLAINERS)
def test_every_method_maps_one_box_on_the_images_grid(detector, street, method) -> None:
    image, boxes, _ = street
    target = box_target(detector, image, boxes, 1, input_size=INPUT_SIZE)
    samples = 16 if method in ("integrated_gradients", "kernel_shap", "lime") else None
    attribution = explain_target(target, method, n_samples=samples)
    assert attribution.values.shape == (image.height, image.width)
    assert attribution.heat.shape == (image.height, image.width)
    assert np.isfinite(attribution.values).all() and np.isfinite(attribution.heat).all()
    assert np.abs(attribution.values).max() > 0, "an all-zero map explains nothing"
    assert attribution.target.startswith("score of box 1 ")
    assert attribution.details["box_index"] == 1
    assert attribution.score == pytest.approx(float(boxes.scores[1]), abs=SCORE_TOL)


def test_grad_cams_layer_covers_the_image_not_the_padding(detector, street) -> None:
    from vlm_core.explain.gradcam import grad_cam_of

    image, boxes, _ = street
    target = box_target(detector, image, boxes, 0, input_size=INPUT_SIZE)
    coarse, value = grad_cam_of(target.forward, target.layer, target.inputs)
    # 320x180 is seen at 227x128 and padded to 256x128: the classification tower at P3
    # (stride 8) has 29 of its 32 columns over the image
    assert tuple(coarse.shape) == (16, 29)
    assert value == pytest.approx(float(boxes.scores[0]), abs=SCORE_TOL)


def test_grad_cam_finds_the_explained_box_not_its_class(detector, street) -> None:
    """On the test scene each box's Grad-CAM peaks inside that box (the car's map on the car,
    the traffic light's on the light). It need not everywhere: Grad-CAM weighs channels by
    their mean gradient over the map, so in a scene with several cars one car's map can peak on
    another (seed 940001 at this size); the classification tower does so less often than the
    pyramid level itself (vlm_driving.explain_target)."""
    image, boxes, _ = street
    for index in range(2):
        target = box_target(detector, image, boxes, index, input_size=INPUT_SIZE)
        heat = explain_target(target, "gradcam").heat
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        x1, y1, x2, y2 = boxes.xyxy[index]
        assert x1 <= x <= x2 and y1 <= y <= y2, (index, boxes.labels[index], (x, y))


def test_the_explain_parameter_chooses_the_box(street) -> None:
    _, boxes, _ = street
    top = int(np.argmax(boxes.scores))
    assert choose_box(boxes, "") == choose_box(boxes, "0") == top
    assert choose_box(boxes, "1") == 1
    last = len(boxes.scores) - 1
    assert choose_box(boxes, str(last)) == last


def test_bad_choices_are_one_line_usage_errors(detector, street) -> None:
    image, boxes, params = street
    count = len(boxes.scores)
    with pytest.raises(UsageError, match=f"there are {count} boxes in this image") as info:
        choose_box(boxes, str(count))
    assert "\n" not in str(info.value)
    empty = as_boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), (180, 320), CLASSES)
    with pytest.raises(UsageError, match="no box to explain"):
        detect_target(image, {"detections": empty}, params, _ctx())
    video = Video(frames=np.zeros((2, 180, 320, 3), np.uint8))
    with pytest.raises(UsageError, match="explains boxes in images, not in a video") as info:
        detect_target(video, {}, params, _ctx())
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="explain must be a box number"):
        DetectParams(explain="top")


def _random_detector(family: str, temperature: float) -> SimpleNamespace:
    """A small randomly initialised detector of ``family`` and what box_target reads of a
    Detector (a stand-in: these weights are not on disk)."""
    torch.manual_seed(0)
    arch = {"family": family, "backbone": "timm:lcnet_050", "class_names": list(CLASSES),
            "min_size": 96, "max_size": 160, "fpn_channels": 32, "head_convs": 1}  # fmt: skip
    module = build_detector(arch).eval()
    set_postprocess(module, score=0.0, nms_iou=0.5, max_detections=20)
    return SimpleNamespace(module=module, class_names=CLASSES, score_temperature=temperature,
                           min_size=96, max_size=160)  # fmt: skip


def _detect(stand_in: SimpleNamespace, image: Image) -> Boxes:
    pixels = torch.from_numpy(image.to_rgb_uint8().copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        (found,) = stand_in.module([pixels])
    scores = calibrated_scores(found["scores"].numpy(), stand_in.score_temperature)
    labels = found["labels"].numpy() - 1
    return as_boxes(found["boxes"].numpy(), scores, labels, (image.height, image.width), CLASSES)


def test_faster_rcnn_pools_the_proposal_the_box_came_from() -> None:
    stand_in = _random_detector("fasterrcnn", temperature=0.5)
    image = Image(pixels=scene(SEED + 1, 160, 96).image)
    boxes = _detect(stand_in, image)
    assert len(boxes.scores) > 3
    for index in (0, len(boxes.scores) - 1):
        target = box_target(stand_in, image, boxes, index)  # type: ignore[arg-type]
        assert target.extra is not None and target.extra["pooled"] == "the box's proposal"
        with torch.no_grad():
            value = float(target.forward(target.inputs)[0])
        assert abs(value - float(boxes.scores[index])) <= SCORE_TOL
        # differentiable in the image (Integrated Gradients, Grad-CAM)
        x = target.inputs.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(target.forward(x).sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_faster_rcnn_pools_the_reported_box_when_no_proposal_gives_it() -> None:
    stand_in = _random_detector("fasterrcnn", temperature=1.0)
    image = Image(pixels=scene(SEED + 1, 160, 96).image)
    boxes = _detect(stand_in, image)
    moved = as_boxes(boxes.xyxy + 3.0, boxes.scores, np.array([CLASSES.index(n) for n in
                     boxes.labels]), (image.height, image.width), CLASSES)  # fmt: skip
    target = box_target(stand_in, image, moved, 0)  # type: ignore[arg-type]
    assert target.extra is not None and target.extra["pooled"] == "the reported box"
    assert target.extra["match_px"] >= 2.5
    with torch.no_grad():
        assert 0.0 < float(target.forward(target.inputs)[0]) < 1.0


def test_retinanet_reads_the_anchor_the_box_came_from() -> None:
    stand_in = _random_detector("retinanet", temperature=0.5)
    image = Image(pixels=scene(SEED + 2, 160, 96).image)
    boxes = _detect(stand_in, image)
    assert len(boxes.scores) > 0
    target = box_target(stand_in, image, boxes, 0)  # type: ignore[arg-type]
    assert target.extra is not None and target.extra["read_from"] == "retinanet anchor"
    with torch.no_grad():
        value = float(target.forward(target.inputs)[0])
    assert abs(value - float(boxes.scores[0])) <= SCORE_TOL


def test_vlm_run_explains_the_chosen_box(vlm_home: Path, tmp_path: Path) -> None:
    from PIL import Image as PILImage

    PILImage.fromarray(scene(SEED, 320, 180).image).save(tmp_path / "street.png")
    request = RunRequest(
        "driving.detect",
        [str(tmp_path / "street.png")],
        {"explainer": "gradcam", "explain": "1", "input_size": str(INPUT_SIZE)},
        device="cpu",
    )
    outcome = run_task(request, registry=load_registry(), keep_results=True)
    (result,) = outcome.results
    boxes, attribution = result.outputs["detections"], result.outputs["attribution"]
    assert attribution.details["box_index"] == 1
    assert attribution.details["box"] == pytest.approx(boxes.xyxy[1].tolist(), abs=0.01)
    assert attribution.score == pytest.approx(float(boxes.scores[1]), abs=SCORE_TOL)
    bad = RunRequest("driving.detect", [str(tmp_path / "street.png")],
                     {"explainer": "gradcam", "explain": "99", "input_size": str(INPUT_SIZE)},
                     device="cpu")  # fmt: skip
    with pytest.raises(UsageError, match=r"explain=99: there are \d+ boxes in this image"):
        run_task(bad, registry=load_registry())  # the one input failed: the run's error
    with pytest.raises(ParameterError, match="explain"):
        run_task(RunRequest("driving.detect", [str(tmp_path / "street.png")],
                            {"explainer": "gradcam", "explain": "top"}),
                 registry=load_registry())  # fmt: skip
    with pytest.raises(UsageError, match="cannot explain with 'rollout'"):
        run_task(RunRequest("driving.detect", [str(tmp_path / "street.png")],
                            {"explainer": "rollout"}), registry=load_registry())  # fmt: skip
