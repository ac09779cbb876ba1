"""Explain one box of `driving.detect`: its reported score as a smooth function of the image.

A detection is not a smooth function of the image: perturb the image and the box moves, another
box wins non-maximum suppression, or the box is gone. What is explained is therefore the score of
one FIXED box, chosen by the task's ``explain`` parameter (empty or ``0``: the highest-scoring
box; ``N``: the N-th box of the ``detections`` output, counting from 0 in the order listed),
read from the same place in the network that scored it on the unperturbed image:

- **FCOS** (the bundled detector) and **RetinaNet**: the head's score at the feature-pyramid
  level and position (anchor) the box was regressed from — FCOS's
  ``sqrt(sigmoid(class logit) * sigmoid(centre-ness))``, RetinaNet's ``sigmoid(class logit)``.
  The position is found by decoding every position's box on the unperturbed image and taking
  the one that reproduces the reported box and score (:func:`_match`), so the forward value of
  the unperturbed image is the reported score to float precision.
- **Faster R-CNN**: the box's class probability (softmax of the class logits) of one fixed
  region of interest pooled through the ROI heads (``box_roi_pool`` -> ``box_head`` ->
  ``box_predictor``). The region is the RPN proposal the reported box was regressed from, found
  the same way; where none reproduces it (it should not happen) the reported box itself is
  pooled, and the forward value then differs from the score by the regression's effect.

In every case the score goes through the weights' score temperature ``T`` as the task reports it
(``sigmoid(logit(s) / T)``, :mod:`vlm_driving.calibration`), so the number explained is the
number in the ``detections`` output. The perturbed images go through a copy of the detector's
own resize and normalisation (the run's ``input_size``) and its backbone and feature pyramid.

The baseline is the image blurred (a Gaussian of sigma = 1/10 of the shorter side, 36 px on a
640x360 image), not a zero image. Both take a box's score to near zero (18 boxes of 6
development scenes, seeds 920000-920005: at most 0.055 blurred, 0.0007 black), and on those
scenes Occlusion's and Integrated Gradients' maps of the top box beat random deletion and
insertion with either. They differ in how much the perturbation itself moves the score: black
cells pasted at random take it down faster (random-order deletion area, median of the 6: 0.48
black, 0.51 mid-grey, 0.65 blurred; a black rectangle in a street is, presumably, itself an
object-like shape), and Integrated Gradients from black put back less of the score when its
top cells were inserted (insertion area 0.69-0.89 on 4 of the 6, against 0.967-0.975
blurred). Blurring removes an object's shape and texture and keeps the scene's colours and
layout. A sigma of 1/20 left a near truck at 0.85.

Grad-CAM's layer is the map the box's class logit is read from: for FCOS and RetinaNet the
output of the classification branch's conv tower at the pyramid level of the box's position
(one 3x3 convolution before the logits), for Faster R-CNN the feature-pyramid level
``MultiScaleRoIAlign`` pools the region from (its box head is not spatial). Grad-CAM weighs a
layer's channels by their mean gradient over the whole map, so at a generic layer it lights
up every car when one car's score is explained; on 30 development scenes (seeds
920000-920029, the top box each) the pyramid level P3 itself gave a deletion area below random
on 93% of them (median 0.136) and the classification tower on 100% (median 0.026). For FCOS
the centre-ness half of the score does not pass that tower, so Grad-CAM shows the class half.
The map is cut to the cells over the image (torchvision pads the resized image to a multiple
of 32) by a pass-through module, so the coarse map lies on the image and not on the padding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vlm_core.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from vlm_core.explain.target import ExplainTarget
    from vlm_core.tasks import RunContext
    from vlm_core.types import Boxes, Image
    from vlm_driving.detector import Detector
    from vlm_driving.params import DetectParams

__all__ = ["BATCH", "EXPLAINERS", "blur_baseline", "box_target", "choose_box", "detect_target"]

#: What a driving.detect box supports (attention rollout needs a ViT; these are convnets).
EXPLAINERS = ("gradcam", "integrated_gradients", "occlusion", "kernel_shap", "lime")
#: Perturbed images per forward call: a 640x360 image is seen at 398x224, ~25 ms each on a CPU
#: core; 8 at once keeps the batch's activations well under 100 MB.
BATCH = 8
#: The baseline's blur, as a fraction of the image's shorter side (36 px on a 640x360 image).
BLUR_FRACTION = 1 / 10
#: Scores are kept this far inside (0, 1) before taking their logit (as calibration does).
EPS = 1e-6
#: A reported box and its source position agree to this many pixels (float rounding only).
MATCH_PX = 0.5


def choose_box(boxes: Boxes, choice: str) -> int:
    """The index into ``boxes`` of the box to explain: ``""`` or ``"0"`` the highest-scoring
    one, ``"N"`` the N-th listed (from 0). One-line ``UsageError`` when there is no box or N
    is out of range."""
    count = len(boxes.scores)
    if count == 0:
        raise UsageError(
            "no box to explain: driving.detect found no box in this image (lower "
            "score_threshold, or widen classes)"
        )
    text = choice.strip()
    if text in ("", "0"):
        return int(np.argmax(boxes.scores))
    try:
        index = int(text)
    except ValueError:
        raise UsageError(
            f"explain must be a box number (0 to {count - 1}), got {choice!r}"
        ) from None
    if not 0 <= index < count:
        raise UsageError(
            f"explain={index}: there {'is' if count == 1 else 'are'} {count} "
            f"box{'' if count == 1 else 'es'} in this image (0 to {count - 1})"
        )
    return index


def detect_target(
    item: Any, outputs: dict[str, Any], params: DetectParams, ctx: RunContext
) -> ExplainTarget:
    """The explain target of one driving.detect input: the chosen box's score (the
    ``TaskSpec.explain`` of driving.detect)."""
    from vlm_core.types import Image
    from vlm_driving.detect import detector_of

    if not isinstance(item, Image):
        raise UsageError(
            f"driving.detect explains boxes in images, not in a {type(item).__name__.lower()}; "
            "run the explainer on a frame saved as an image"
        )
    boxes = outputs.get("detections")
    if boxes is None:
        raise UsageError("no box to explain: the result has no detections")
    index = choose_box(boxes, params.explain)
    detector = detector_of(params, ctx)
    if detector.exported:
        raise UsageError(
            f"an exported detector ({detector.exported}) has no gradients or layers to explain; "
            "run the explainer with the torch weights it was exported from"
        )
    return box_target(detector, item, boxes, index, input_size=params.input_size)


# --------------------------------------------------------------------------- the target


def blur_baseline(pixels: Tensor) -> Tensor:
    """``pixels`` (1, 3, H, W) blurred by a Gaussian of sigma ``BLUR_FRACTION`` of the shorter
    side (reflected at the borders): the image with its objects' shapes removed."""
    import torch
    import torch.nn.functional as F

    sigma = max(1.0, BLUR_FRACTION * min(pixels.shape[-2:]))
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(pixels)
    channels = int(pixels.shape[1])
    out = pixels
    for axis in (-1, -2):  # rows, then columns: the Gaussian is separable
        shape = [1, 1, 1, 1]
        shape[axis] = kernel.numel()
        weight = kernel.reshape(shape).repeat(channels, 1, 1, 1)
        pad = [radius, radius, 0, 0] if axis == -1 else [0, 0, radius, radius]
        # reflection needs padding shorter than the side; replicate beyond that
        mode = "reflect" if radius < out.shape[axis] else "replicate"
        out = F.conv2d(F.pad(out, pad, mode=mode), weight, groups=channels)
    return out


def box_target(
    detector: Detector,
    image: Image,
    boxes: Boxes,
    index: int,
    *,
    input_size: int = 0,
    batch: int = BATCH,
) -> ExplainTarget:
    """The target of box ``index`` of ``boxes`` (the detections ``detector`` reported for
    ``image`` at ``input_size``): see the module docstring."""
    import torch

    from vlm_core.explain.target import ExplainTarget

    module = detector.module
    parameter = next(module.parameters())
    pixels = (
        torch.from_numpy(np.array(image.to_rgb_uint8(), dtype=np.uint8, copy=True))
        .permute(2, 0, 1)[None]
        .to(device=parameter.device, dtype=parameter.dtype)
        / 255.0
    )
    transform = _transform(detector, input_size)
    label = boxes.labels[index]
    column = list(detector.class_names).index(label) + 1  # torchvision's 0 is the background
    reported = float(boxes.scores[index])
    box = np.asarray(boxes.xyxy[index], dtype=np.float64)
    scorer = _scorer(module, transform, pixels, box, column, reported, detector.score_temperature)
    with torch.no_grad():
        start = float(scorer(pixels)[0])
    extra = {
        "box": [round(float(v), 2) for v in box],
        "label": label,
        "box_index": index,
        "box_score": round(reported, 6),
        "box_score_at_input": round(start, 6),
        **scorer.source,
    }
    return ExplainTarget(
        forward=scorer,
        inputs=pixels,
        what=f"score of box {index} '{label}' ({reported:.2f})",
        background=image,
        baseline=blur_baseline(pixels),
        layer=scorer.tap,
        batch=batch,
        extra=extra,
    )


def _transform(detector: Detector, input_size: int) -> nn.Module:
    """A copy of the detector's resize-and-normalise at the run's ``input_size`` (a copy, so
    the cached detector that other runs share is not changed)."""
    transform = copy.copy(detector.module.transform)
    if input_size:
        scale = input_size / detector.min_size
        transform.min_size = (int(input_size),)
        transform.max_size = round(detector.max_size * scale)
    else:
        transform.min_size = (detector.min_size,)
        transform.max_size = detector.max_size
    return transform


class _Scorer:
    """The fixed box's score of a batch of images (B, 3, H, W) -> (B,), calibrated as the task
    reports it. ``tap``: the module Grad-CAM hooks (the level's map over the image);
    ``source``: where the score is read from, for the map's details."""

    def __init__(self, read: Callable[[Tensor], Tensor], temperature: float, tap: Any,
                 source: dict[str, Any]) -> None:  # fmt: skip
        self.read, self.temperature, self.tap, self.source = read, temperature, tap, source

    def __call__(self, x: Tensor) -> Tensor:
        return _calibrated(self.read(x), self.temperature)


def _calibrated(log_score: Tensor, temperature: float) -> Tensor:
    """``sigmoid(logit(s) / T)`` of raw scores given as ``log s`` (``s`` itself at T = 1), as
    :func:`vlm_driving.calibration.calibrated_scores` computes it, differentiably."""
    import torch

    if temperature == 1.0:
        return log_score.exp()
    log_s = log_score.clamp(math.log(EPS), math.log1p(-EPS))
    logit = log_s - torch.log(-torch.expm1(log_s))
    return torch.sigmoid(logit / temperature)


def _level_tap(cells: tuple[int, int]) -> nn.Module:
    """The pass-through module Grad-CAM hooks: a level's map cut to the ``cells`` (rows,
    columns) over the image (the class is made here so that importing this file imports no
    torch)."""
    from torch import nn

    class LevelOverImage(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[..., : cells[0], : cells[1]]

    return LevelOverImage()


def _through(tap: nn.Module, level: Tensor) -> Tensor:
    """``level`` with the part over the image passed through ``tap`` (the same values; the
    padding's cells rejoin it unchanged)."""
    import torch

    inner = tap(level)
    rows, cols = inner.shape[-2:]
    if (rows, cols) == tuple(level.shape[-2:]):
        return inner  # type: ignore[no-any-return]
    top = torch.cat([inner, level[..., :rows, cols:]], dim=-1)
    return torch.cat([top, level[..., rows:, :]], dim=-2)


def _cells(level: Tensor, padded: tuple[int, int], resized: tuple[int, int]) -> tuple[int, int]:
    """The (rows, columns) of a level's map over the resized image (the rest is padding)."""
    rows, cols = level.shape[-2:]
    return (
        min(rows, math.ceil(resized[0] * rows / padded[0])),
        min(cols, math.ceil(resized[1] * cols / padded[1])),
    )


def _scorer(
    module: nn.Module,
    transform: nn.Module,
    pixels: Tensor,
    box: np.ndarray,
    column: int,
    reported: float,
    temperature: float,
) -> _Scorer:
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet

    if isinstance(module, FasterRCNN):
        return _roi_scorer(module, transform, pixels, box, column, reported, temperature)
    if isinstance(module, FCOS | RetinaNet):
        return _dense_scorer(module, transform, pixels, box, column, reported, temperature)
    raise UsageError(f"cannot explain a box of a {type(module).__name__} detector")


def _prepare(transform: nn.Module, x: Tensor) -> Any:
    """torchvision's resize, normalisation and padding of a batch (an ``ImageList``)."""
    images, _ = transform(list(x))
    return images


def _match(
    candidates: Tensor, scores: Tensor, box: np.ndarray, reported: float
) -> tuple[int, float, float]:
    """The candidate (index into (N, 4) boxes in image pixels with (N,) calibrated scores)
    that reproduces the reported box and score: the nearest box (largest coordinate
    difference, pixels), a score difference of 0.01 counting as one pixel. Returns the index,
    its box difference in pixels and its score difference."""
    import torch

    target = torch.as_tensor(box, dtype=candidates.dtype, device=candidates.device)
    box_err = (candidates - target).abs().amax(dim=1)
    score_err = (scores - reported).abs()
    best = int(torch.argmin(box_err + 100 * score_err))
    return best, float(box_err[best]), float(score_err[best])


def _dense_scorer(
    module: nn.Module,
    transform: nn.Module,
    pixels: Tensor,
    box: np.ndarray,
    column: int,
    reported: float,
    temperature: float,
) -> _Scorer:
    """FCOS / RetinaNet: the head's score at the position the box came from."""
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.transform import resize_boxes
    from torchvision.ops import boxes as box_ops

    fcos = isinstance(module, FCOS)
    head = module.head
    with torch.no_grad():
        images = _prepare(transform, pixels)
        features = list(module.backbone(images.tensors).values())
        anchors = module.anchor_generator(images, features)[0]
        counts = [0]
        found: list[tuple[Tensor, Tensor]] = []
        for level in features:
            cls = head.classification_head([level])[0]  # (HWA, K)
            if fcos:
                reg, ctr = head.regression_head([level])
                log_s = 0.5 * (F.logsigmoid(cls[:, column]) + F.logsigmoid(ctr[0, :, 0]))
                decoded = module.box_coder.decode(reg[0], anchors[counts[-1] : counts[-1]
                                                                  + cls.shape[0]])  # fmt: skip
            else:
                reg = head.regression_head([level])[0]
                log_s = F.logsigmoid(cls[:, column])
                decoded = module.box_coder.decode_single(
                    reg, anchors[counts[-1] : counts[-1] + cls.shape[0]]
                )
            size = images.image_sizes[0]
            decoded = box_ops.clip_boxes_to_image(decoded, size)
            decoded = resize_boxes(decoded, size, tuple(pixels.shape[-2:]))
            found.append((decoded, _calibrated(log_s, temperature)))
            counts.append(counts[-1] + cls.shape[0])
    candidates = torch.cat([f[0] for f in found]).double()
    scores = torch.cat([f[1] for f in found]).double()
    best, box_err, score_err = _match(candidates, scores, box, reported)
    level = int(np.searchsorted(np.asarray(counts), best, side="right") - 1)
    position = best - counts[level]
    padded = (int(images.tensors.shape[-2]), int(images.tensors.shape[-1]))
    tap = _level_tap(_cells(features[level], padded, tuple(images.image_sizes[0])))

    branch = head.classification_head

    def read(x: Tensor) -> Tensor:
        batch = _prepare(transform, x)
        level_map = list(module.backbone(batch.tensors).values())[level]
        # the classification branch as torchvision's head runs it, with its conv tower's
        # output through the tap (Grad-CAM's layer)
        tower = _through(tap, branch.conv(level_map))
        logits = branch.cls_logits(tower)
        n, _, h, w = logits.shape
        logits = logits.view(n, -1, branch.num_classes, h, w).permute(0, 3, 4, 1, 2)
        cls = logits.reshape(n, -1, branch.num_classes)[:, position, column]
        if not fcos:
            return F.logsigmoid(cls)
        _, ctr = head.regression_head([level_map])
        return 0.5 * (F.logsigmoid(cls) + F.logsigmoid(ctr[:, position, 0]))

    names = ["P3", "P4", "P5", "P6", "P7"]
    source = {
        "read_from": "fcos position" if fcos else "retinanet anchor",
        "level": names[level] if level < len(names) else str(level),
        "position": position,
        "match_px": round(box_err, 4),
        "match_score": round(score_err, 6),
        "gradcam_layer": "classification tower at "
        + (names[level] if level < len(names) else str(level)),
    }
    return _Scorer(read, temperature, tap, source)


def _roi_scorer(
    module: nn.Module,
    transform: nn.Module,
    pixels: Tensor,
    box: np.ndarray,
    column: int,
    reported: float,
    temperature: float,
) -> _Scorer:
    """Faster R-CNN: the class probability of one fixed region through the ROI heads."""
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection.transform import resize_boxes
    from torchvision.ops import boxes as box_ops

    heads = module.roi_heads
    pool = heads.box_roi_pool
    original = tuple(pixels.shape[-2:])
    with torch.no_grad():
        images = _prepare(transform, pixels)
        size = images.image_sizes[0]
        features = module.backbone(images.tensors)
        proposals, _ = module.rpn(images, features)
        pooled = heads.box_head(pool(features, proposals, images.image_sizes))
        logits, regression = heads.box_predictor(pooled)
        decoded = heads.box_coder.decode(regression, proposals)[:, column]
        decoded = resize_boxes(box_ops.clip_boxes_to_image(decoded, size), size, original)
        scores = _calibrated(F.log_softmax(logits, dim=-1)[:, column], temperature)
    best, box_err, score_err = _match(decoded.double(), scores.double(), box, reported)
    if box_err <= MATCH_PX and score_err <= 1e-3:
        region, pooled_what = proposals[0][best : best + 1].clone(), "the box's proposal"
    else:
        reported_box = torch.as_tensor(box, dtype=pixels.dtype, device=pixels.device)[None]
        region, pooled_what = resize_boxes(reported_box, original, size), "the reported box"
    level = int(pool.map_levels([region])[0])
    name = pool.featmap_names[level]
    padded = (int(images.tensors.shape[-2]), int(images.tensors.shape[-1]))
    tap = _level_tap(_cells(features[name], padded, tuple(size)))

    def read(x: Tensor) -> Tensor:
        batch = _prepare(transform, x)
        maps = module.backbone(batch.tensors)
        maps[name] = _through(tap, maps[name])
        regions = [region.to(x)] * int(x.shape[0])
        out = heads.box_predictor(heads.box_head(pool(maps, regions, batch.image_sizes)))[0]
        return F.log_softmax(out, dim=-1)[:, column]

    source = {
        "read_from": "faster r-cnn roi",
        "pooled": pooled_what,
        "region": [round(float(v), 2) for v in resize_boxes(region, size, original)[0]],
        "match_px": round(box_err, 4),
        "match_score": round(score_err, 6),
        "gradcam_layer": f"feature pyramid map '{name}'",
    }
    return _Scorer(read, temperature, tap, source)
