"""`driving.detect` in `vlm bench --pipeline`: generated street scenes at 640x360 (the
sample's size) as PNG files, against the detector alone on the decoded frames (:data:`NOTE`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlm_core.bench.pipeline import PipelineCase

SIZE = (640, 360)  # width, height
NOTE = (
    "the detector on decoded frames: torchvision's transform, backbone, FPN, head and box "
    "post-processing (NMS) at the run's settings, with the familiarity check's pooled "
    "features; one call per batch"
)


def make_inputs(folder: Path, count: int, seed: int) -> None:
    from PIL import Image

    from vlm_driving.scenes import scene

    width, height = SIZE
    for i in range(count):
        frame = scene(seed + i, width, height)
        Image.fromarray(frame.image).save(folder / f"street-{i:05d}.png")


def model_only(files: list[Path], params: Any, batch: int, device: str) -> Callable[[], Any]:
    import numpy as np
    from PIL import Image

    from vlm_driving.detect import settings_of
    from vlm_driving.detector import load_detector

    detector = load_detector(params.weights, device=device)
    settings = settings_of(params, detector)
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]

    def run() -> None:
        for start in range(0, len(frames), batch):
            detector(frames[start : start + batch], settings)

    return run


def case() -> PipelineCase:
    return PipelineCase(make_inputs, model_only, note=NOTE)
