"""The loaded detector `driving.detect` runs: trained weights (by default the bundled detector)
or a COCO-pretrained torchvision detector mapped onto the driving classes, prepared by the
core's runtime policy. Runs lease it from the core's model cache (one instance per weights
file, device and precision, evicted under the cache's memory budget); scripts load their own.

Score threshold, NMS IoU, detections per image and input size live on the torchvision module,
so a call sets them and detects under the detector's lock: runs sharing a cached detector with
different settings do not see each other's."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vlm_core.errors import InputError
from vlm_core.tasks import package_file
from vlm_core.weights import load_into, requested
from vlm_driving.classes import CLASSES, COCO_TO_DRIVING
from vlm_driving.models import (
    build_detector,
    check_frame_sizes,
    coco_detector,
    set_input_size,
    set_postprocess,
)

TASK = "driving.detect"


def default_weights() -> str:
    return str(package_file("vlm_driving", "weights", "detector", "model.safetensors"))


@dataclass
class Detections:
    """One image's detections: boxes (N, 4) xyxy in its pixels, scores (N,) and class indices
    (N,) into the detector's ``class_names``."""

    xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


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
    """A torchvision detector ready to run, with what its outputs mean."""

    model: nn.Module  # the prepared model (compiled wrapper when compiling)
    module: nn.Module  # the torchvision detector itself (thresholds, input size)
    class_names: tuple[str, ...]
    sha256: str
    name: str
    min_size: int
    max_size: int
    policy: Any
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def nbytes(self) -> int:
        """What the model cache counts against its budget."""
        from vlm_core.runtime.cache import module_nbytes

        return module_nbytes(self.module)

    def _apply(self, settings: DetectSettings) -> None:
        module = self.module
        set_postprocess(module, score=settings.score, nms_iou=settings.nms_iou,
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
        with self.lock:
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
            outputs = self.model(batch)
        return [
            Detections(
                xyxy=o["boxes"].float().cpu().numpy().astype(np.float32),
                scores=o["scores"].float().cpu().numpy().astype(np.float32),
                labels=(o["labels"].cpu().numpy() - 1).astype(np.int64),
            )
            for o in outputs
        ]


def detector_request(
    weights: str = "",
    *,
    coco_model: str = "",
    coco_weights: str = "",
    device: str = "cpu",
    dtype: str | None = None,
    compile: bool = False,
) -> tuple[Any, Callable[[], Detector]]:
    """The model-cache key of a detector and the function that builds it. The key names the
    weights file by path, size and modification time (not its sha256: no re-hashing on every
    run), so a changed file loads again."""
    from vlm_core.runtime.cache import CacheKey
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
    # weights the request named that cannot be used are its fault (exit 2), the bundled ones not
    param, given = ("coco_weights", coco_weights) if coco_model else ("weights", weights)
    with requested(param, given):
        path = resolve(ref, plugin="driving") if ref != "torchvision" else None
    stat = path.stat() if path else None
    where = f"{path}|{stat.st_size}|{stat.st_mtime_ns}" if path and stat else ref
    name = f"driving.detect[{coco_model or 'trained'},compile={compile}]"
    key = CacheKey(name, where, str(policy.device), policy.dtype_name)

    def build() -> Detector:
        with requested(param, given):
            if coco_model:
                module, sha, title, sizes = _coco(coco_model, ref)
            else:
                module, sha, title, sizes = _trained(ref)
        prepared = prepare_model(module, policy)
        names = tuple(module.arch["class_names"])  # type: ignore[index]
        return Detector(prepared, module, names, sha, title, sizes[0], sizes[1], policy)

    return key, build


@contextmanager
def leased_detector(weights: str = "", **options: Any) -> Iterator[Detector]:
    """The detector of :func:`detector_request`'s arguments from the core's model cache, held
    for the ``with`` block."""
    from vlm_core.runtime.cache import model_cache

    key, build = detector_request(weights, **options)
    with model_cache().lease(key, build) as detector:
        yield detector


def load_detector(weights: str = "", **options: Any) -> Detector:
    """A detector of its own (not cached), for scripts and benchmarks: the arguments of
    :func:`detector_request`."""
    return detector_request(weights, **options)[1]()


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
    load_into(module, trained.state_dict, plugin="driving", source=trained.path)
    arch = module.arch  # type: ignore[assignment]
    name = f"{arch['family']} on {arch['backbone']}"
    return module, trained.sha256, name, (int(arch["min_size"]), int(arch["max_size"]))
