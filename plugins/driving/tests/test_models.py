"""The detectors: every family on a timm backbone through the FPN, torchvision's own builders,
architecture errors, and COCO checkpoints cut down to the driving classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vlm_driving.classes import CLASSES, COCO_TO_DRIVING
from vlm_driving.models import (
    build_detector,
    check_arch,
    coco_detector,
    map_coco_state,
    set_postprocess,
)

from vlm_core.errors import UsageError
from vlm_core.weights.errors import WeightsError

SMALL = {
    "backbone": "timm:lcnet_050",
    "class_names": list(CLASSES),
    "min_size": 96,
    "max_size": 160,
    "fpn_channels": 32,
    "head_convs": 1,
}


@pytest.mark.parametrize("family", ["fcos", "retinanet", "fasterrcnn"])
def test_each_family_trains_and_detects_on_a_timm_backbone(family: str) -> None:
    torch.manual_seed(0)
    model = build_detector({**SMALL, "family": family})
    images = [torch.rand(3, 90, 160), torch.rand(3, 96, 150)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    model.train()
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    set_postprocess(model, score=0.0, nms_iou=0.5, max_detections=7)
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    assert len(out[0]["boxes"]) <= 7
    assert int(out[0]["labels"].min()) >= 1 and int(out[0]["labels"].max()) <= len(CLASSES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "yolo"}, "family must be one of fcos, retinanet, fasterrcnn"),
        ({"backbone": "resnet18"}, "backbone must be timm:<name> or torchvision:<name>"),
        ({"backbone": "torchvision:vgg16"}, "no torchvision builder for fcos on vgg16"),
        ({"class_names": []}, "needs class_names"),
        ({"anchors": 3}, "unknown detector architecture field 'anchors'"),
    ],
)
def test_bad_architectures_get_one_line_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_arch({**SMALL, **change})


def test_an_unknown_timm_backbone_is_named() -> None:
    with pytest.raises(UsageError, match="unknown backbone 'resnet_nope'"):
        build_detector({**SMALL, "backbone": "timm:resnet_nope"})


def test_class_rows_of_each_family_are_cut_to_the_driving_classes() -> None:
    names = list(CLASSES)
    keep = [0] + [next(i for i, c in COCO_TO_DRIVING.items() if c == n) for n in names]
    # RetinaNet: 9 anchors x 91 classes, anchor-major
    cls = torch.arange(9 * 91, dtype=torch.float32)[:, None].repeat(1, 3)
    state = {
        "head.classification_head.cls_logits.weight": cls,
        "head.classification_head.cls_logits.bias": cls[:, 0],
    }
    cut = map_coco_state(state, "retinanet", names, COCO_TO_DRIVING)
    w = cut["head.classification_head.cls_logits.weight"]
    assert w.shape == (9 * 9, 3)
    assert w[:, 0].reshape(9, 9).tolist() == [[a * 91 + k for k in keep] for a in range(9)]
    # Faster R-CNN: class scores and four box deltas per class
    fr = {
        "roi_heads.box_predictor.cls_score.weight": torch.arange(91.0)[:, None],
        "roi_heads.box_predictor.cls_score.bias": torch.arange(91.0),
        "roi_heads.box_predictor.bbox_pred.weight": torch.arange(364.0)[:, None],
        "roi_heads.box_predictor.bbox_pred.bias": torch.arange(364.0),
    }
    cut = map_coco_state(fr, "fasterrcnn", names, COCO_TO_DRIVING)
    assert cut["roi_heads.box_predictor.cls_score.bias"].tolist() == keep
    assert cut["roi_heads.box_predictor.bbox_pred.bias"].tolist() == [
        4 * k + j for k in keep for j in range(4)
    ]
    with pytest.raises(WeightsError, match=r"has no head\.classification_head\.cls_logits\.weight"):
        map_coco_state(fr, "fcos", names, COCO_TO_DRIVING)


def test_a_coco_checkpoint_becomes_a_driving_detector_with_the_same_class_scores(
    tmp_path: Path,
) -> None:
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    coco = fcos_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=128, max_size=160
    )
    path = tmp_path / "fcos_resnet50_fpn_coco.pth"
    torch.save(coco.state_dict(), path)  # a torchvision checkpoint file, as downloaded
    model, sha = coco_detector(
        "fcos", "resnet50", str(path), CLASSES, COCO_TO_DRIVING, min_size=128, max_size=160
    )
    assert len(sha) == 64 and model.arch["class_names"] == list(CLASSES)  # type: ignore[index]
    coco.eval()
    model.eval()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        feats = list(coco.backbone(x).values())
        a = coco.head.classification_head(feats)  # (1, positions, 91)
        b = model.head.classification_head(list(model.backbone(x).values()))  # (1, positions, 9)
    for i, name in enumerate(CLASSES):
        coco_id = next(k for k, c in COCO_TO_DRIVING.items() if c == name)
        assert torch.allclose(b[..., i + 1], a[..., coco_id]), name
    torch.save({"not": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"no head\.classification_head\.cls_logits\.weight"):
        coco_detector("fcos", "resnet50", str(tmp_path / "other.pth"), CLASSES, COCO_TO_DRIVING)
    with pytest.raises(UsageError, match="no COCO weights for fcos on vgg16"):
        coco_detector("fcos", "vgg16", str(path), CLASSES, COCO_TO_DRIVING)


def test_training_can_start_from_a_coco_checkpoint(tmp_path: Path) -> None:
    """`vlm train driving.detect -p backbone=torchvision:resnet50 -p coco_weights=FILE`: the
    model to train carries the COCO rows of the data's classes."""
    from torchvision.models.detection import fcos_resnet50_fpn
    from vlm_driving.params import DetectTrainParams
    from vlm_driving.scenes import write_dataset
    from vlm_driving.train import build

    from vlm_core.tasks import TrainContext

    torch.manual_seed(0)
    coco = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / "coco.pth"
    torch.save(coco.state_dict(), path)
    data = write_dataset(tmp_path / "data", 3, (160, 96), seed=70)
    params = DetectTrainParams(backbone="torchvision:resnet50", coco_weights=str(path),
                               image_width=160, image_height=96, val_fraction=0.34)  # fmt: skip
    setup = build(data, params, TrainContext(task="driving.detect", plugin="driving", device="cpu"))
    key = "head.classification_head.cls_logits.weight"
    trained, original = setup.model.state_dict()[key], coco.state_dict()[key]
    assert trained.shape[0] == len(CLASSES) + 1
    assert torch.equal(trained[1 + CLASSES.index("car")], original[3])
    assert torch.equal(trained[1 + CLASSES.index("traffic sign")], original[13])
    assert setup.card["architecture"]["backbone"] == "torchvision:resnet50"
    with pytest.raises(Exception, match="coco_weights need a torchvision backbone"):
        build(data, DetectTrainParams(coco_weights=str(path)),
              TrainContext(task="driving.detect", plugin="driving", device="cpu"))  # fmt: skip


def test_fcos_with_a_32_channel_pyramid_runs_on_a_square_image_at_a_small_size() -> None:
    """At min_size 64 a square image's last pyramid map is 1x1, and FCOS's 32-group head over
    32 channels normalised one value per group, which torch refuses; the head now gives the
    limit (the bias), and trained weights of the plain GroupNorm load unchanged."""
    from vlm_driving.models import _GroupNorm

    arch = {"class_names": ["car", "person"], "min_size": 64, "max_size": 96, "fpn_channels": 32}
    torch.manual_seed(0)
    model = build_detector(arch)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(type(m) is _GroupNorm for m in norms)
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        (found,) = model.eval()([image])
    assert set(found) == {"boxes", "scores", "labels"}
    losses = model.train()([image], [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]),
                                      "labels": torch.tensor([1])}])  # fmt: skip
    sum(losses.values()).backward()
    plain = torch.nn.GroupNorm(32, 32)
    x = torch.randn(2, 32, 3, 5)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-1, 1)
    norm = _GroupNorm(32, 32)
    norm.load_state_dict(plain.state_dict())  # the same keys
    assert torch.equal(norm(x), plain(x))  # anything but one value per group: unchanged
    one = torch.randn(1, 32, 1, 1)
    assert torch.equal(norm(one), norm.bias.view(1, 32, 1, 1).expand_as(one))
