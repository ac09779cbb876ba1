"""Held-out road scenes for `vlm eval driving.detect --shift`: the scene generator's scenes
drawn under a named shift (:data:`vlm_driving.shifts.SHIFTS`), written as a COCO data set that
`vlm eval` measures whole (``eval_all``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlm_driving.classes import CLASSES
from vlm_driving.scenes import CROWD, Frame, random_world, render
from vlm_driving.shifts import DENSE_COUNT, DENSE_DISTANCE, SHIFTS

#: The crowd of the ``dense`` shift: every class's count range times DENSE_COUNT, its depth
#: range times DENSE_DISTANCE.
DENSE_CROWD = {
    cls: (lo * DENSE_COUNT, hi * DENSE_COUNT, z0 * DENSE_DISTANCE, z1 * DENSE_DISTANCE)
    for cls, (lo, hi, z0, z1) in CROWD.items()
}


def shifted_scene(seed: int, shift: str, width: int = 400, height: int = 224) -> Frame:
    """The scene of ``seed`` under ``shift``; ``"none"`` is :func:`vlm_driving.scenes.scene`'s
    scene of that seed. Lighting and weather are set after the world is drawn (its random
    look is drawn as usual, then replaced), so the street and its objects are the unshifted
    scene's; a fog's visibility comes from a second generator seeded by ``seed``."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift '{shift}' (shifts: {', '.join(SHIFTS)})")
    rng = np.random.default_rng(seed)
    world = random_world(rng, crowd=DENSE_CROWD if shift == "dense" else None)
    look = world.look
    if shift == "night":
        world.look = replace(look, time="night")
    elif shift == "fog":
        visibility = float(np.random.default_rng([seed, 1]).uniform(60, 160))
        world.look = replace(look, weather="fog", visibility=visibility)
    elif shift == "rain":
        world.look = replace(look, weather="rain", visibility=1e4)
    return render(world, width, height, rng)


def write_shift_set(
    folder: Path, shift: str, count: int, seed: int, size: tuple[int, int] = (400, 224)
) -> Path:
    """``count`` scenes of seeds ``seed``.. under ``shift`` at ``size`` (width, height) as a
    COCO data set in ``folder``; returns its ``annotations.json``."""
    from vlm_driving.datasets import Annotated, write_coco

    width, height = size
    images = Path(folder) / "images"
    images.mkdir(parents=True, exist_ok=True)
    items = []
    for s in range(seed, seed + count):
        frame = shifted_scene(s, shift, width, height)
        path = images / f"scene_{s}.png"
        Image.fromarray(frame.image).save(path)
        items.append(
            Annotated(image=path, xyxy=frame.xyxy, labels=frame.labels, size=(height, width))
        )
    return write_coco(items, CLASSES, Path(folder) / "annotations.json")


def write_eval_set(
    folder: Path, *, shift: str, count: int, seed: int, params: Any, card: Any = None
) -> Path:
    """The writer of the task's :class:`vlm_core.tasks.EvalShifts`: scenes at the size the
    evaluated weights were trained at (their ``image_width`` x ``image_height``)."""
    size = (int(params.image_width), int(params.image_height))
    return write_shift_set(folder, shift, count, seed, size)
