"""Does `driving.detect` say when an input is unlike the generated road scenes it learned?

Through the run path a user's `vlm run` takes (``run_task``), with the bundled detector and its
familiarity file (the pooled outputs of its feature pyramid, P3-P7; deep k-NN distance):

- images: held-out generated scenes with the ACCEPTANCE seeds (never used to train the
  detector, to fit or calibrate its familiarity model or its score temperature, or to choose
  the features), at the training size 400x224 and at 640x360 and 1280x720: the share flagged
  (goal: at most 5%); real photographs that installed packages carry, per source: the share
  flagged (goal: at least 90%) and the AUROC of the score, in-domain against that source
  (goal: 0.95);
- videos (one verdict per video, from the mean of its frames' features): generated drives
  with acceptance seeds against pans across the same real photographs made into MP4s;
- what the check costs: the detector's forward pass bare and with the feature tap and the
  k-NN scoring, timed alternately, ratio of the medians (goal: at most 5% more), for one
  400x224 image and for a batch of 8 720p frames.

It runs torch and numpy on one thread each (on a busy 2-core machine two threads made the
forward pass 30 times slower and the k-NN scoring 200 times slower).

    .venv/bin/python plugins/driving/benchmarks/familiarity.py [--scenes 200] [--drives 10]
        [--json FILE]

Seeds (see weights/detector/TRAINING.md): the detector was trained on scenes 0-2999; its
familiarity model was fitted and calibrated on scenes 700000-701999 and its score temperature
on scenes 710000-710399; the features and the video aggregation were chosen on scenes and
drives 720000-722099; mAP is measured on scenes 900000-900199. This benchmark draws its
in-domain inputs from seeds 800000 (scenes) and 800500 (drives) only.
"""

from __future__ import annotations

import os

# one thread for torch and for numpy's BLAS, set before numpy loads: on a shared 2-core
# machine two threads made each forward pass 30 times slower, and the k-NN product of one row
# with the feature bank 10 ms instead of 0.05 ms
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

#: The first seed of the acceptance scenes and of the acceptance drives.
ACCEPTANCE_SCENES = 800_000
ACCEPTANCE_DRIVES = 800_500
#: The sizes (width, height) of the extra in-domain scenes and of the drives, in turn.
OTHER_SIZES = ((640, 360), (1280, 720))
#: Seconds of each acceptance drive and of each pan across a photograph.
VIDEO_SECONDS = 1.0
FPS = 25.0
#: Alternating rounds of the overhead timing (the median of each side is compared).
ROUNDS = 41


def matplotlib_images() -> list[Path]:
    """The sample images matplotlib ships (a photograph, a drawing and a logo)."""
    try:
        import matplotlib
    except ImportError:
        return []
    folder = Path(matplotlib.get_data_path()) / "sample_data"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def real_sources() -> dict[str, list[Path]]:
    from vlm_core.bench.familiarity import photographs

    sources = {"scikit-image": photographs(), "matplotlib": matplotlib_images()}
    return {name: paths for name, paths in sources.items() if paths}


def write_scenes(folder: Path, count: int, seed: int, sizes: Any) -> list[Path]:
    from PIL import Image
    from vlm_driving.scenes import scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        path = folder / f"scene_{seed + i}.png"
        Image.fromarray(scene(seed + i, width, height).image).save(path)
        paths.append(path)
    return paths


def write_drives(folder: Path, count: int, seconds: float) -> list[Path]:
    from vlm_driving.scenes import write_drive

    return [
        write_drive(
            folder / f"drive_{i}",
            seconds,
            seed=ACCEPTANCE_DRIVES + i,
            size=OTHER_SIZES[i % len(OTHER_SIZES)],
        )[0]
        for i in range(count)
    ]


def pan(pixels: np.ndarray, frames: int, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """(frames, H, W, 3): a 16:9 window sliding across ``pixels`` from left to right."""
    from PIL import Image

    h, w = pixels.shape[:2]
    ch = min(h, int(w * 9 / 16))
    cw = int(ch * 16 / 9)
    out = []
    for t in range(frames):
        x = int((w - cw) * t / max(frames - 1, 1))
        y = (h - ch) // 2
        crop = Image.fromarray(pixels[y : y + ch, x : x + cw])
        out.append(np.asarray(crop.resize(size, Image.Resampling.BILINEAR)))
    return np.stack(out)


def write_pans(folder: Path, sources: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Each real image as an MP4 panning across it."""
    from vlm_core.export.video import encode_mp4
    from vlm_core.io.load import load_input, probe_input

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {}
    for name, paths in sources.items():
        videos = []
        for path in paths:
            pixels = load_input(probe_input(path)).to_rgb_uint8()
            video = folder / f"{name}_{path.stem}.mp4"
            video.write_bytes(encode_mp4(pan(pixels, round(VIDEO_SECONDS * FPS)), FPS))
            videos.append(video)
        out[f"{name} (pans)"] = videos
    return out


def flagged_rate(paths: list[Path]) -> dict[str, Any]:
    from vlm_core.bench.familiarity import task_scores

    oods = task_scores("driving.detect", paths)
    flags = [bool(o and o["flagged"]) for o in oods]
    return {"n": len(flags), "flagged_rate": float(np.mean(flags))}


def overhead(frames: list[np.ndarray]) -> dict[str, float]:
    """The detector's forward pass on ``frames`` bare and with the familiarity check."""
    import torch
    from vlm_driving.detector import load_detector
    from vlm_driving.features import detect_with_features

    from vlm_core.bench.familiarity import tap_overhead
    from vlm_core.runtime.policy import run_context

    detector = load_detector()
    batch = [torch.from_numpy(f.copy()).permute(2, 0, 1).float().div(255) for f in frames]

    def plain() -> Any:
        with torch.inference_mode(), run_context(detector.policy):
            return detect_with_features(detector.model, detector.module, batch, features=False)

    def checked() -> Any:
        with torch.inference_mode(), run_context(detector.policy):
            outputs, rows = detect_with_features(detector.model, detector.module, batch)
        assert rows is not None
        return outputs, detector.judge(rows.numpy())

    return tap_overhead(plain, checked, rounds=ROUNDS, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=200, help="acceptance scenes at 400x224")
    parser.add_argument("--other", type=int, default=60,
                        help="acceptance scenes at 640x360 and 1280x720")  # fmt: skip
    parser.add_argument("--drives", type=int, default=10, help="acceptance drives")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)

    from vlm_driving.scenes import scene

    from vlm_core.bench.familiarity import familiarity_table, print_table

    report: dict[str, Any] = {}
    sources = real_sources()
    with tempfile.TemporaryDirectory(prefix="vlm-driving-familiarity-") as tmp:
        root = Path(tmp)
        scenes = write_scenes(root / "scenes", args.scenes, ACCEPTANCE_SCENES, [(400, 224)])
        images = familiarity_table("driving.detect", scenes, sources)
        print_table({**images, "task": "driving.detect images (scenes at 400x224)"})
        other = write_scenes(root / "other", args.other, ACCEPTANCE_SCENES + args.scenes,
                             OTHER_SIZES)  # fmt: skip
        images["in_domain_other_sizes"] = flagged_rate(other)
        row = images["in_domain_other_sizes"]
        print(f"  in-domain scenes at 640x360 and 1280x720: flagged "
              f"{100 * row['flagged_rate']:.1f}% (n={row['n']})", flush=True)  # fmt: skip
        report["images"] = images

        drives = write_drives(root / "drives", args.drives, VIDEO_SECONDS)
        pans = write_pans(root / "pans", sources)
        videos = familiarity_table("driving.detect", drives, pans)
        print_table({**videos, "task": "driving.detect videos (drives vs pans over photos)"})
        report["videos"] = videos

    small = [scene(ACCEPTANCE_SCENES).image]
    large = [scene(ACCEPTANCE_SCENES + i, 1280, 720).image for i in range(8)]
    report["overhead"] = {"one 400x224 image": overhead(small),
                          "8 frames of 1280x720": overhead(large)}  # fmt: skip
    for name, row in report["overhead"].items():
        print(f"tap overhead, {name}: {100 * row['overhead']:+.1f}% (forward "
              f"{1000 * row['plain_s']:.1f} ms bare, {1000 * row['checked_s']:.1f} ms checked, "
              f"median of {row['rounds']} alternating rounds)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
