"""The loaded detector `driving.detect` runs: trained weights (by default the bundled detector)
or a COCO-pretrained torchvision detector mapped onto the driving classes, loaded through the
core's one weights path (:func:`vlm_core.weights.load_model`: one cached instance per weights
file, device, precision and compile setting, evicted under the model cache's memory budget)
and prepared by the core's runtime policy.

Score threshold, NMS IoU, detections per image and input size live on the torchvision module,
so a call sets them and detects under the loaded model's lock: runs sharing a cached detector
with different settings do not see each other's.

Scores are calibrated: weights whose card records a score temperature ``T``
(``score_calibration``, fitted by :mod:`vlm_driving.calibration` on held-out data) report
``sigmoid(logit(score) / T)`` for each box, and every score threshold is on that scale. Weights
with a familiarity model also give each image's pooled pyramid features
(:mod:`vlm_driving.features`), which :meth:`Detector.judge` turns into ``ood`` verdicts.

An exported network (`vlm export driving.detect`, given as ``weights``) runs inside torchvision's
FCOS in place of its backbone and head (:func:`vlm_driving.deploy.fcos_running`): resize,
anchors, decoding and NMS are the same code, so the detections are the torch detector's. It has
no feature taps, so its images get no familiarity verdict (``ood`` None)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from vlm_core.errors import InputError
from vlm_core.familiarity import Ood
from vlm_core.tasks import RunContext, package_file
from vlm_core.weights import LoadedModel, ModelRecipe, load_model
from vlm_driving.calibration import calibrated_scores, raw_threshold
from vlm_driving.classes import CLASSES, COCO_TO_DRIVING
from vlm_driving.features import detect_with_features
from vlm_driving.models import (
    build_detector,
    check_frame_sizes,
    coco_recipe,
    coco_reference,
    set_input_size,
    set_postprocess,
    state_from_card,
)

TASK = "driving.detect"


def default_weights() -> str:
    return str(package_file("vlm_driving", "weights", "detector", "model.safetensors"))


def _detector(card: Mapping[str, Any]) -> nn.Module:
    return build_detector(state_from_card(card))


#: The trained detector: a `vlm train driving.detect` network, by default the bundled one.
DETECTOR = ModelRecipe(task=TASK, name="detector", build=_detector, default=default_weights)


@dataclass
class Detections:
    """One image's detections: boxes (N, 4) xyxy in its pixels, scores (N,) and class indices
    (N,) into the detector's ``class_names``; ``features``: the image's pooled pyramid features
    (D,) when the weights have a familiarity model."""

    xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None = None


@dataclass(frozen=True)
class DetectSettings:
    """How a call detects: the lowest score kept, the NMS IoU, the most boxes per image and the
    shorter side the detector sees (0: the weights' own)."""

    score: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    input_size: int = 0


@dataclass
class Detector:
    """A torchvision detector ready to run (a loaded model of the core's cache), with what its
    outputs mean. ``temperature`` overrides the weights' score temperature (1.0: raw scores).

    ``network`` replaces the detector's backbone and head (its per-level head outputs, see
    :mod:`vlm_driving.deploy`): the exported program of weights that are an export (set from
    ``loaded`` when not given), or any network of the same outputs (the parity metric's).
    ``run_policy``: the device such a network's detector runs on (exports carry no policy)."""

    loaded: LoadedModel
    temperature: float | None = None
    network: nn.Module | None = None
    run_policy: Any = None

    def __post_init__(self) -> None:
        if self.network is None and self.loaded.exported:
            self.network = self.loaded.module

    @cached_property
    def _running(self) -> nn.Module:
        """torchvision's FCOS around ``network`` (one per detector: its thresholds and input
        size are this detector's)."""
        from vlm_driving.deploy import MIN_SIDE, fcos_running

        assert self.network is not None
        pt2 = self.network is self.loaded.module and self.exported == "pt2"
        return fcos_running(self.network, self.loaded.card, min_side=MIN_SIDE if pt2 else 0)

    @property
    def exported(self) -> str:
        """The format of an exported network ("onnx", "pt2"; "" for torch weights)."""
        return self.loaded.exported

    @property
    def model(self) -> nn.Module:
        """What to call: the prepared model (the compiled wrapper when compiling)."""
        if self.network is not None:
            return self._running
        return self.loaded.model  # type: ignore[no-any-return]

    @property
    def module(self) -> nn.Module:
        """The torchvision detector itself (thresholds, input size); with ``network``, the
        FCOS that runs it (no parameters of its own)."""
        if self.network is not None:
            return self._running
        return self.loaded.module

    @property
    def arch(self) -> dict[str, Any]:
        return dict(self.module.arch)  # type: ignore[arg-type]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.arch["class_names"])

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    @property
    def name(self) -> str:
        """What the detector is, for people: the family on its backbone."""
        if self.loaded.recipe is not DETECTOR:
            return self.loaded.recipe.name
        exported = f" ({self.exported} export)" if self.exported else ""
        return f"{self.arch['family']} on {self.arch['backbone']}{exported}"

    @property
    def min_size(self) -> int:
        return int(self.arch["min_size"])

    @property
    def max_size(self) -> int:
        return int(self.arch["max_size"])

    @property
    def policy(self) -> Any:
        """How the detector runs; with ``network``, float32 on the run's device (an export
        is a float32 graph; autocast would only change the Python pre-processing)."""
        if self.network is None and self.loaded.policy is not None:
            return self.loaded.policy
        from vlm_core.runtime.policy import policy_for

        chosen = self.run_policy or self.loaded.policy
        return policy_for(chosen.device if chosen is not None else "cpu", "float32")

    @property
    def score_temperature(self) -> float:
        """The temperature the scores are divided by (as logits): ``temperature`` when given,
        else the weights' card's ``score_calibration``, else 1 (raw scores)."""
        if self.temperature is not None:
            return float(self.temperature)
        fitted = self.loaded.card.get("score_calibration")
        return float(fitted.get("temperature", 1.0)) if isinstance(fitted, Mapping) else 1.0

    def score_of(self, raw: float) -> float:
        """The score this detector reports for a box of raw score ``raw``."""
        return float(calibrated_scores(np.asarray([raw]), self.score_temperature)[0])

    @property
    def checks_familiarity(self) -> bool:
        """Whether the weights have a familiarity model (then detections carry features); never
        with ``network`` (no feature taps in an exported graph)."""
        return self.network is None and self.loaded.familiarity is not None

    def judge(self, features: np.ndarray) -> list[Ood | None]:
        """The familiarity verdict of each row of (N, D) pooled features (N ``None`` for
        weights without a familiarity model)."""
        return self.loaded.judge(features)

    def _apply(self, settings: DetectSettings) -> None:
        module = self.module
        score = raw_threshold(settings.score, self.score_temperature)
        set_postprocess(module, score=score, nms_iou=settings.nms_iou,
                        max_detections=settings.max_detections)  # fmt: skip
        if settings.input_size:
            scale = settings.input_size / self.min_size
            set_input_size(module, settings.input_size, round(self.max_size * scale))
        else:
            set_input_size(module, self.min_size, self.max_size)

    def __call__(
        self, frames: Sequence[np.ndarray], settings: DetectSettings | None = None
    ) -> list[Detections]:
        """Detect in (H, W, 3) uint8 frames (one batch) with ``settings`` (None: the
        thresholds the torchvision model was built with)."""
        if not frames:
            return []
        with self.loaded.lock:
            if settings is not None:
                self._apply(settings)
            check_frame_sizes(self.module, frames)
            return self._detect(frames)

    def _detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        from vlm_core.runtime.policy import run_context

        device = self.policy.device
        batch = [
            torch.from_numpy(np.require(f, np.uint8, ("C", "W")))
            .to(device, non_blocking=True)
            .permute(2, 0, 1)
            .float()
            .div_(255.0)
            for f in frames
        ]
        with run_context(self.policy):
            outputs, rows = detect_with_features(
                self.model, self.module, batch, features=self.checks_familiarity
            )
        feats = rows.float().numpy() if rows is not None else [None] * len(outputs)
        temperature = self.score_temperature
        return [
            Detections(
                xyxy=o["boxes"].float().cpu().numpy().astype(np.float32),
                scores=calibrated_scores(o["scores"].float().cpu().numpy(), temperature),
                labels=(o["labels"].cpu().numpy() - 1).astype(np.int64),
                features=f,
            )
            for o, f in zip(outputs, feats, strict=True)
        ]


def load_detector(
    weights: str = "",
    *,
    coco_model: str = "",
    coco_weights: str = "",
    device: str = "cpu",
    dtype: str | None = None,
    compile: bool = False,
    ctx: RunContext | None = None,
) -> Detector:
    """The detector of ``weights`` (empty: bundled), or with ``coco_model`` the COCO-pretrained
    torchvision detector of ``coco_weights``, through the core's model cache. With ``ctx``, on
    the run's device with its sha256 in the run's provenance."""
    from vlm_core.runtime.policy import policy_for

    policy = policy_for(ctx.device if ctx else device, dtype,
                        compile="default" if compile else None)  # fmt: skip
    recipe, ref, param = DETECTOR, weights, "weights"
    if coco_model:
        if not coco_weights:
            raise InputError(
                "coco_model needs coco_weights (the torchvision .pth file, or "
                "`torchvision` to download it)"
            )
        family = coco_model.split("_", 1)[0]
        backbone = "mobilenet_v3_large" if "mobilenet" in coco_model else "resnet50"
        recipe = coco_recipe(family, backbone, CLASSES, COCO_TO_DRIVING)
        ref, param = coco_reference(family, backbone, coco_weights), "coco_weights"
    loaded = load_model(ref, recipe, policy=policy, param=param, ctx=ctx)
    return Detector(loaded, run_policy=policy)
