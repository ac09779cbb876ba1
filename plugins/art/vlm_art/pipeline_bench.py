"""`art.style_transfer` in `vlm bench --pipeline`: photographs through the default style's
feed-forward network (:data:`NOTE`), against that network alone on the decoded, resized
photographs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlm_core.bench.pipeline import PipelineCase

#: Side of the square crops written as inputs (the task's default ``size``: no resizing).
SIDE = 256
NOTE = "the default style's feed-forward network on the resized photographs, one call per batch"


def make_inputs(folder: Path, count: int, seed: int) -> None:
    """``count`` square crops (:data:`SIDE` px) of the held-out photographs
    (:data:`vlm_art.content.HELD_OUT`), at positions drawn from ``seed``, as PNG files."""
    import numpy as np
    from PIL import Image

    from vlm_art.content import HELD_OUT, photograph

    photos = [photograph(name) for name in HELD_OUT]
    rng = np.random.default_rng(seed)
    for i in range(count):
        rgb = photos[i % len(photos)]
        height, width = rgb.shape[:2]
        top, left = rng.integers(0, height - SIDE + 1), rng.integers(0, width - SIDE + 1)
        crop = rgb[top : top + SIDE, left : left + SIDE]
        Image.fromarray(crop).save(folder / f"photo-{i:05d}.png")


def model_only(files: list[Path], params: Any, batch: int, device: str) -> Callable[[], Any]:
    """The default style's network over ``files`` (``params``: TransferParams), decoded and
    resized as a run does, ``batch`` photographs a call; the callable returns the outputs."""
    import numpy as np
    import torch
    from PIL import Image

    from vlm_art.feedforward import bundled_recipe
    from vlm_art.style_images import resized
    from vlm_art.stylenet import stylise
    from vlm_art.tensors import to_tensor
    from vlm_core.weights import load_model

    net = load_model("", bundled_recipe(params.style), device=device).model
    contents = [to_tensor(resized(np.asarray(Image.open(f).convert("RGB")), params.size))
                for f in files]  # fmt: skip
    stacked = torch.cat(contents).to(device)

    def run() -> list[Any]:
        outputs = []
        for start in range(0, len(files), batch):
            with torch.inference_mode():
                outputs.append(stylise(net, stacked[start : start + batch]))
        return outputs

    return run


def case() -> PipelineCase:
    return PipelineCase(make_inputs, model_only, note=NOTE)
