"""The loaded detector `driving.detect` runs: trained weights (by default the bundled detector)
or a COCO-pretrained torchvision detector mapped onto the driving classes, prepared by the
core's runtime policy and kept once per process, weights file, device and precision."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vlm_core.errors import InputError
from vlm_core.tasks import package_file
from vlm_driving.classes import CLASSES, COCO_TO_DRIVING
from vlm_driving.models import build_detector, coco_detector, set_input_size, set_postprocess

TASK = "driving.detect"

_lock = threading.Lock()
_loaded: dict[tuple[Any, ...], Detector] = {}


def default_weights() -> str:
    return str(package_file("vlm_driving", "weights", "detector", "model.safetensors"))


@dataclass
class Detections:
    """One image's detections: boxes (N, 4) xyxy in its pixels, scores (N,) and class indices
    (N,) into the detector's ``class_names``."""

    xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class Detector:
    """A torchvision detector ready to run, with what its outputs mean."""

    model: nn.Module  # the prepared model (compiled wrapper when compiling)
    module: nn.Module  # the torchvision detector itself (thresholds, input size)
    class_names: tuple[str, ...]
    sha256: str
    name: str
    min_size: int
    max_size: int
    policy: Any

    def configure(
        self, *, score: float, nms_iou: float, max_detections: int, input_size: int = 0
    ) -> None:
        """Thresholds and input size of the next calls (a size of 0: the weights' own)."""
        set_postprocess(self.module, score=score, nms_iou=nms_iou, max_detections=max_detections)
        if input_size:
            scale = input_size / self.min_size
            set_input_size(self.module, input_size, round(self.max_size * scale))
        else:
            set_input_size(self.module, self.min_size, self.max_size)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect in (H, W, 3) uint8 frames (one batch)."""
        from vlm_core.runtime.policy import run_context

        if not frames:
            return []
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
            outputs = self.model(batch)
        return [
            Detections(
                xyxy=o["boxes"].float().cpu().numpy().astype(np.float32),
                scores=o["scores"].float().cpu().numpy().astype(np.float32),
                labels=(o["labels"].cpu().numpy() - 1).astype(np.int64),
            )
            for o in outputs
        ]


def load_detector(
    weights: str = "",
    *,
    coco_model: str = "",
    coco_weights: str = "",
    device: str = "cpu",
    dtype: str | None = None,
    compile: bool = False,
) -> Detector:
    """The detector of ``weights`` (empty: bundled), or with ``coco_model`` torchvision's COCO
    detector of ``coco_weights``; loaded once per process (again when the file changes)."""
    from vlm_core.runtime.policy import policy_for, prepare_model
    from vlm_core.weights.resolve import resolve

    policy = policy_for(device, dtype, compile="default" if compile else None)
    if coco_model:
        if not coco_weights:
            raise InputError(
                "coco_model needs coco_weights (the torchvision .pth file, or "
                "`torchvision` to download it)"
            )
        ref = coco_weights
    else:
        ref = weights or default_weights()
    path = resolve(ref, plugin="driving") if ref != "torchvision" else None
    stat = path.stat() if path else None
    key = (
        coco_model,
        str(path or ref),
        stat and stat.st_size,
        stat and stat.st_mtime_ns,
        str(policy.device),
        policy.dtype_name,
        compile,
    )
    with _lock:
        if key in _loaded:
            return _loaded[key]
    if coco_model:
        module, sha, name, sizes = _coco(coco_model, ref)
    else:
        module, sha, name, sizes = _trained(ref)
    prepared = prepare_model(module, policy)
    detector = Detector(
        prepared,
        module,
        tuple(module.arch["class_names"]),
        sha,
        name,  # type: ignore[index]
        sizes[0],
        sizes[1],
        policy,
    )
    with _lock:
        return _loaded.setdefault(key, detector)


def _coco(model_name: str, ref: str) -> tuple[nn.Module, str, str, tuple[int, int]]:
    family = model_name.split("_", 1)[0]
    backbone = "mobilenet_v3_large" if "mobilenet" in model_name else "resnet50"
    module, sha = coco_detector(family, backbone, ref, CLASSES, COCO_TO_DRIVING)
    return module, sha, f"{model_name} (COCO, mapped)", (800, 1333)


def _trained(ref: str) -> tuple[nn.Module, str, str, tuple[int, int]]:
    from vlm_core.weights.trained import load_trained

    trained = load_trained(ref, plugin="driving", task=TASK)
    card: Mapping[str, Any] = trained.sidecar.get("card") or trained.card or {}
    arch = card.get("architecture")
    if not isinstance(arch, Mapping) or "family" not in arch:
        raise InputError(f"{trained.path} has no detector architecture in its card")
    module = build_detector(arch)
    try:
        module.load_state_dict(trained.state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{trained.path}: weights do not fit their card ({first})") from None
    arch = module.arch  # type: ignore[assignment]
    name = f"{arch['family']} on {arch['backbone']}"
    return module, trained.sha256, name, (int(arch["min_size"]), int(arch["max_size"]))
