"""Speed of art.style_transfer: the feed-forward network against the optimisation, per image,
and the wall time of the whole `vlm run` command (start-up included).

    .venv/bin/python plugins/art/benchmarks/style_transfer.py [--size 512] [--style painting]
        [--repeats 5] [--optimize-sizes 128,256] [--optimize-steps 10] [--cli 3] [--threads 2]
        [--json FILE]

- feed-forward: the bundled network of ``--style`` (through the core's weights path) on
  scikit-image's astronaut at ``--size``, ``--repeats`` timed passes after one warm-up; wall and
  CPU seconds, median and range;
- optimisation: seconds per step at each of ``--optimize-sizes`` (``--optimize-steps`` steps
  after a one-step warm-up) and what the task's default 100 steps make of it;
- CLI (``--cli N``, 0 to skip): ``vlm run art.style_transfer photo.png -p style=STYLE
  -p size=SIZE --out DIR`` in a fresh process with ``VLM_OFFLINE=1``, N times with a fresh
  ``VLM_HOME`` (cold: nothing cached) and N times with one kept ``VLM_HOME`` (warm, after one
  untimed run), alternating; wall seconds, median and range.

In-process figures are taken as `vlm` runs: torch's OpenMP workers wait passively
(``OMP_WAIT_POLICY=PASSIVE``, what the CLI sets unless the user chose) — spinning workers on a
loaded 2-core machine made the same pass 2.7x slower. Prints one JSON object. The machine's
other load shows in the ranges: quote medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `vlm` runs; before torch loads


def spread(values: list[float]) -> dict[str, float | int]:
    return {"n": len(values), "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}  # fmt: skip


def feedforward(photo: Any, style: str, repeats: int) -> dict[str, object]:
    import torch
    from vlm_art.feedforward import bundled_recipe
    from vlm_art.stylenet import stylise
    from vlm_art.tensors import to_tensor

    from vlm_core.weights import load_model

    net = load_model("", bundled_recipe(style)).model
    x = to_tensor(photo)
    walls, cpus = [], []
    with torch.inference_mode():
        stylise(net, x)  # warm-up
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            stylise(net, x)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return {"size": list(photo.shape[1::-1]), "wall_s": spread(walls), "cpu_s": spread(cpus)}


def optimisation(photo: Any, style: str, sizes: list[int], steps: int) -> list[object]:
    from vlm_art import style_images
    from vlm_art.optimize import StyleTransfer
    from vlm_art.params import TransferParams
    from vlm_art.tensors import to_tensor

    defaults = TransferParams()
    transfer = StyleTransfer(defaults.backbone, seed=defaults.seed)
    weights = {"style_weight": defaults.style_weight,
               "content_weight": defaults.content_weight, "lr": defaults.lr}  # fmt: skip
    rows: list[object] = []
    for size in sizes:
        content = to_tensor(style_images.resized(photo, size))
        target = to_tensor(style_images.pixels(style_images.Style(style), size))
        transfer(content, target, steps=1, **weights)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        transfer(content, target, steps=steps, **weights)
        step_s = (time.perf_counter() - wall) / steps
        per_image = f"wall_s_per_image_{defaults.steps}_steps"
        rows.append({"size": size, "steps_timed": steps, "wall_s_per_step": round(step_s, 4),
                     "cpu_s_per_step": round((time.process_time() - cpu) / steps, 4),
                     per_image: round(defaults.steps * step_s, 1)})  # fmt: skip
    return rows


def cli(photo_file: Path, style: str, size: int, repeats: int) -> dict[str, object]:
    command = [str(Path(sys.executable).with_name("vlm")), "run", "art.style_transfer",
               str(photo_file), "-p", f"style={style}", "-p", f"size={size}"]  # fmt: skip
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        warm_home = work / "warm-home"

        def once(home: Path, out: Path) -> float:
            env = {**os.environ, "VLM_HOME": str(home), "VLM_OFFLINE": "1"}
            start = time.perf_counter()
            done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True,
                                  text=True, timeout=600)  # fmt: skip
            took = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"vlm run failed: {done.stderr.strip()}")
            return took

        once(warm_home, work / "warm-up")
        for i in range(repeats):
            times["cold"].append(once(work / f"cold-home-{i}", work / f"cold-{i}"))
            times["warm"].append(once(warm_home, work / f"warm-{i}"))
    return {"command": " ".join(["vlm", *command[1:], "--out", "DIR"]),
            **{k: spread(v) for k, v in times.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--style", default="painting")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--optimize-sizes", default="128,256")
    parser.add_argument("--optimize-steps", type=int, default=10)
    parser.add_argument("--cli", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data
    from vlm_art import style_images

    torch.set_num_threads(args.threads)

    photo = style_images.resized(np.asarray(data.astronaut()), args.size)
    report: dict[str, object] = {"threads": args.threads, "style": args.style,
                                 "content": f"skimage astronaut at {args.size} px"}  # fmt: skip
    report["feedforward"] = feedforward(photo, args.style, args.repeats)
    sizes = [int(s) for s in args.optimize_sizes.split(",") if s]
    if sizes:
        report["optimize"] = optimisation(np.asarray(data.astronaut()), args.style, sizes,
                                          args.optimize_steps)  # fmt: skip
    if args.cli:
        with tempfile.TemporaryDirectory() as tmp:
            photo_file = Path(tmp) / f"photo{args.size}.png"
            Image.fromarray(photo).save(photo_file)
            report["cli"] = cli(photo_file, args.style, args.size, args.cli)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
