"""How well `caption.describe` and `caption.answer` know their limits: the familiarity check of
the bundled captioner on held-out generated product photos and on real photographs.

For each task, through ``vlm run``'s own path (``vlm_core.bench.familiarity``):

- the share of held-out in-domain photos flagged: generated with data seeds 40 (128 px) and
  41 (96 px), which nothing was trained, fitted, calibrated or selected on (the captioner
  trained on seed 0; its familiarity model was fitted on seeds 20-22, the temperatures on
  seed 25, the features chosen on seeds 20-24);
- per real source, the share flagged and the AUROC of the score against the in-domain photos:
  scikit-image's 26 photographs and scientific images, square crops of them (seeded), faces
  of scikit-image's LFW subset, and matplotlib's photograph of Grace Hopper;
- the cost: the check's own work (the tap's pooling of the image tower's output and the
  Mahalanobis score) as a share of the captioner's work for one photo (the task's recognition
  and caption decoding); and that work with and without the check, timed alternately.

    .venv/bin/python plugins/caption/benchmarks/familiarity.py [--scale 1] [--json FILE]

``--scale 1`` (about 5 minutes on 2 busy CPU cores) runs 30 + 30 in-domain photos, the 26
photographs, 20 crops, 10 faces and Grace Hopper per task; ``--scale 5`` (about 20 minutes)
the README's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: held-out in-domain photos: (data seed, side in px); never used to train, fit or select
ACCEPTANCE = ((40, 128), (41, 96))
MESSAGE = "hi, my order arrived damaged, see the photo"


def in_domain(folder: Path, per_seed: int) -> list[Path]:
    from vlm_caption.products import write_dataset

    paths: list[Path] = []
    for seed, size in ACCEPTANCE:
        write_dataset(folder / f"seed{seed}", per_seed, size=size, seed=seed)
        paths += sorted((folder / f"seed{seed}").glob("*.png"))
    return paths


def real_sources(folder: Path, crops: int, faces: int) -> dict[str, list[Path]]:
    """The real photographs installed packages carry, per source."""
    import matplotlib
    import skimage
    from PIL import Image as PIL

    from vlm_core.bench.familiarity import photographs

    photos = photographs()
    out: dict[str, list[Path]] = {"skimage photographs": photos}
    rng = np.random.default_rng(0)
    (folder / "crops").mkdir(parents=True, exist_ok=True)
    cropped = []
    for i in range(crops):
        source = photos[i % len(photos)]
        with PIL.open(source) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = int(min(w, h) * rng.uniform(0.25, 0.8))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            cropped.append(folder / "crops" / f"{i:03d}-{source.stem}.png")
            im.crop((x, y, x + side, y + side)).save(cropped[-1])
    out["skimage photograph crops"] = cropped
    lfw = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    (folder / "faces").mkdir(exist_ok=True)
    face_paths = []
    for i in range(min(faces, len(lfw))):
        face_paths.append(folder / "faces" / f"{i:03d}.png")
        PIL.fromarray((lfw[i] * 255).astype(np.uint8)).save(face_paths[-1])
    out["skimage LFW faces (25 px)"] = face_paths
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        out["matplotlib grace_hopper.jpg"] = [hopper]
    return out


def overhead(task: str) -> dict[str, dict[str, float]]:
    """The check's cost on one generated photo: ``task``, the task's whole captioner work
    (its "model time") bare and checked, timed alternately (on a busy machine the two medians
    differ by more than the check costs, either way); ``alone``, the check's own work timed by
    itself (the hook's pooling of the tower's output and the score), and its share of the
    bare task's median."""
    import torch
    from vlm_caption.answer import answer
    from vlm_caption.describe import _captions
    from vlm_caption.knowledge import load_knowledge_base
    from vlm_caption.model import (
        FEATURE_STATS,
        Loaded,
        encode,
        load_captioner,
        recognise,
        tapped,
    )
    from vlm_caption.params import DescribeParams
    from vlm_caption.products import render_photo

    from vlm_core.bench.familiarity import tap_overhead
    from vlm_core.bench.timing import time_call
    from vlm_core.familiarity import pool_features
    from vlm_core.types import Image

    loaded, kb = load_captioner(), load_knowledge_base()
    images = [Image(render_photo(128, 40 * 1_000_003 + 999).pixels)]
    params = DescribeParams()
    bare = Loaded(loaded.captioner, loaded.sha256, loaded.path)  # not checked: no tap

    def describe(which: Loaded) -> Callable[[], Any]:
        def run() -> Any:  # as the task does: one tower pass for the tags and the captions
            memory = encode(which, images)
            return recognise(which, images, kb, memory=memory), _captions(which, memory, params)

        return run

    def answered(which: Loaded) -> Callable[[], Any]:
        return lambda: (answer(which, images, [MESSAGE], kb=kb),
                        which.captioner.beam_search(images, beam=3))  # fmt: skip

    def alone() -> Any:  # the check's own work: the hook's pooling and the score
        with tapped(loaded):
            pass
        return loaded.judge(pool_features(output, stats=FEATURE_STATS))

    with torch.inference_mode():
        output = loaded.captioner.image_tower(loaded.captioner.pixels(images))
    make = describe if task == "caption.describe" else answered
    costs = {
        "task": tap_overhead(make(bare), make(loaded), rounds=21),
    }
    alone()
    check_s = statistics.median(time_call(alone, torch.device("cpu"), 201))
    costs["alone"] = {"check_s": check_s, "share": check_s / costs["task"]["plain_s"]}
    return costs


def main() -> None:
    from vlm_core.bench.familiarity import familiarity_table, print_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply the sample sizes")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    args = parser.parse_args()
    tables = []
    with tempfile.TemporaryDirectory(prefix="caption-familiarity-") as tmp:
        folder = Path(tmp)
        ours = in_domain(folder / "in-domain", 30 * args.scale)
        real = real_sources(folder / "real", crops=20 * args.scale, faces=10 * args.scale)
        for task, params in (("caption.describe", {}), ("caption.answer", {"message": MESSAGE})):
            table = familiarity_table(task, ours, real, params=params)
            table["overhead"] = overhead(task)
            table["check"] = table["overhead"]["alone"]
            print_table(table)
            alone = table["overhead"].pop("alone")
            print(f"  the check's own work (tap pooling and score): {alone['check_s'] * 1e3:.3f}"
                  f" ms per photo, {100 * alone['share']:.3f}% of the task's model time "
                  "(median of 201 calls)")  # fmt: skip
            cost = table["overhead"]["task"]
            print(f"  the task with and without the check: {100 * cost['overhead']:+.1f}% "
                  f"({cost['plain_s'] * 1e3:.1f} ms bare, {cost['checked_s'] * 1e3:.1f} ms "
                  f"checked, medians of {cost['rounds']} alternating rounds)",
                  flush=True)  # fmt: skip
            tables.append(table)
    if args.json:
        args.json.write_text(json.dumps(tables, indent=2) + "\n")


if __name__ == "__main__":
    main()
