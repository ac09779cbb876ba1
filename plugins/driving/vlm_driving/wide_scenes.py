"""A wider training distribution for the road-scene detector: more scenes at night, in fog and
in rain, and denser, farther crowds than :func:`vlm_driving.scenes.scene`'s mix, drawn by the
scene generator's own lighting, weather and crowd controls; and a validation set of every
named shift (:mod:`vlm_driving.shift_data`) for choosing a checkpoint.

The street of a seed is drawn as :func:`vlm_driving.scenes.random_world` draws it (with a
denser crowd where the mix asks for one); the mix itself (which look, how dense) comes from a
second generator seeded by ``[seed, 2]``, so no choice here moves another's random stream.

``python -m vlm_driving.wide_scenes OUT --count N --seed S [--size WxH,..] [--val-count M
--val-seed V]``
writes ``OUT/instances_train.json`` (N mixed scenes) and, with ``--val-count``,
``OUT/instances_val.json`` (M scenes: the shifts of :data:`vlm_driving.shifts.SHIFTS` in turn,
seeds V..), the layout `vlm train driving.detect --data OUT` reads as its own validation split.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from vlm_driving.classes import CLASSES
from vlm_driving.scenes import CROWD, Frame, _parse_sizes, random_world, render

#: Share of the mixed scenes drawn at night, in fog and in rain (the rest keep the
#: generator's own random look: day, dusk or night, clear, fog or rain).
NIGHT, FOG, RAIN = 0.25, 0.25, 0.15
#: Share of the mixed scenes with a denser, farther crowd, and its ranges: every class's
#: object count times a factor in COUNT_RANGE, its depth range times one in DISTANCE_RANGE
#: (the ``dense`` shift is 2x and 1.5x).
DENSE = 1 / 3
COUNT_RANGE, DISTANCE_RANGE = (1.25, 2.25), (1.0, 1.6)
#: Fog visibility of the mixed scenes, metres (training and the fog shift: 60-160).
VISIBILITY = (50.0, 170.0)


def _crowd(count: float, distance: float) -> dict[str, tuple[int, int, float, float]]:
    return {
        cls: (round(lo * count), max(1, round(hi * count)), z0 * distance, z1 * distance)
        for cls, (lo, hi, z0, z1) in CROWD.items()
    }


def scene_mix(seed: int, dense: float = DENSE) -> tuple[str, tuple[float, float] | None, float]:
    """What the mix draws for ``seed``: the look (``"night"``, ``"fog"``, ``"rain"`` or
    ``"random"``: the generator's own), the crowd's (count, distance) factors (None: the
    training crowd; drawn for a share ``dense`` of the seeds) and a fog visibility (used only
    in fog). The default ``dense`` gives the scenes the shipped detector trained on."""
    mix = np.random.default_rng([seed, 2])
    factors = None
    if mix.random() < dense:
        factors = (float(mix.uniform(*COUNT_RANGE)), float(mix.uniform(*DISTANCE_RANGE)))
    pick = mix.random()
    visibility = float(mix.uniform(*VISIBILITY))
    look = (
        "night" if pick < NIGHT
        else "fog" if pick < NIGHT + FOG
        else "rain" if pick < NIGHT + FOG + RAIN
        else "random"
    )  # fmt: skip
    return look, factors, visibility


def wide_scene(seed: int, width: int = 400, height: int = 224, dense: float = DENSE) -> Frame:
    """The mixed training scene of ``seed`` (:func:`scene_mix`; the shares are :data:`NIGHT`,
    :data:`FOG`, :data:`RAIN` and ``dense``)."""
    kind, factors, visibility = scene_mix(seed, dense)
    rng = np.random.default_rng(seed)
    world = random_world(rng, crowd=_crowd(*factors) if factors else None)
    if kind == "night":
        world.look = replace(world.look, time="night")
    elif kind == "fog":
        world.look = replace(world.look, weather="fog", visibility=visibility)
    elif kind == "rain":
        world.look = replace(world.look, weather="rain", visibility=1e4)
    return render(world, width, height, rng)


def _write(folder: Path, name: str, frames: Sequence[tuple[int, Frame]]) -> Path:
    from vlm_driving.datasets import Annotated, write_coco

    images = folder / f"{name}_images"
    images.mkdir(parents=True, exist_ok=True)
    items = []
    for seed, frame in frames:
        path = images / f"scene_{seed}.png"
        Image.fromarray(frame.image).save(path)
        height, width = frame.image.shape[:2]
        items.append(
            Annotated(image=path, xyxy=frame.xyxy, labels=frame.labels, size=(height, width))
        )
    return write_coco(items, CLASSES, folder / f"instances_{name}.json")


def write_wide_set(
    folder: Path, count: int, seed: int, sizes: Sequence[tuple[int, int]] = ((400, 224),),
    dense: float = DENSE,
) -> Path:  # fmt: skip
    """``count`` mixed scenes (seeds ``seed``..) as ``folder/instances_train.json``; the
    scenes take the (width, height) ``sizes`` in turn, a share ``dense`` with a denser crowd."""
    frames = [
        (s, wide_scene(s, *sizes[(s - seed) % len(sizes)], dense=dense))
        for s in range(seed, seed + count)
    ]
    return _write(Path(folder), "train", frames)


def write_shift_val(
    folder: Path, count: int, seed: int, size: tuple[int, int] = (400, 224)
) -> Path:
    """``count`` validation scenes (seeds ``seed``..), every shift in turn, as
    ``folder/instances_val.json``."""
    from vlm_driving.shift_data import shifted_scene
    from vlm_driving.shifts import SHIFTS

    names = list(SHIFTS)
    w, h = size
    frames = [
        (s, shifted_scene(s, names[(s - seed) % len(names)], w, h))
        for s in range(seed, seed + count)
    ]
    return _write(Path(folder), "val", frames)


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_driving.wide_scenes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--count", type=int, default=3000, help="mixed training scenes")
    parser.add_argument("--seed", type=int, required=True, help="the first training seed")
    parser.add_argument(
        "--size",
        type=_parse_sizes,
        default=[(400, 224)],
        help="WIDTHxHEIGHT[,WxH..] that the training scenes take in turn",
    )
    parser.add_argument(
        "--dense", type=_share, default=DENSE,
        help=f"share of the training scenes with a denser, farther crowd (default {DENSE:.3f})",
    )  # fmt: skip
    parser.add_argument("--val-count", type=int, default=0, help="validation scenes (shifts)")
    parser.add_argument("--val-seed", type=int, default=None, help="the first validation seed")
    args = parser.parse_args(argv)
    if args.count:
        print(write_wide_set(args.out, args.count, args.seed, args.size, args.dense))
    if args.val_count:
        if args.val_seed is None:
            parser.error("--val-count needs --val-seed")
        print(write_shift_val(args.out, args.val_count, args.val_seed))


if __name__ == "__main__":
    main()
