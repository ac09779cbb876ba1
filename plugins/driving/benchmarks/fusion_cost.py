"""What the fusion adds to `driving.fuse`'s detection time per frame, on CPU.

On N generated camera + LiDAR frames (:func:`vlm_driving.lidar_scenes.generate`, seeds
8_250_000.. by default, held out), each frame is timed twice, in alternating order: detection
alone (:func:`vlm_driving.detect.detect_images`, as `driving.fuse` calls it) and detection
followed by the fusion of its boxes (:func:`vlm_driving.fusion.range_boxes`). The ratio of the
medians less one is the cost of the fusion; the fusion's own median is printed beside it.
Torch runs on ``--threads`` threads (default 1, so the two timings do not fight other work
for cores).

    .venv/bin/python plugins/driving/benchmarks/fusion_cost.py --count 100
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=8_250_000, help="first seed")
    parser.add_argument("--count", type=int, default=100, help="frames")
    parser.add_argument("--size", default="640x360", help="image WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    import torch
    from vlm_driving.detect import detect_images, detector_of
    from vlm_driving.fuse import fusion_settings
    from vlm_driving.fusion import range_boxes
    from vlm_driving.lidar_scenes import generate
    from vlm_driving.params import FuseParams

    from vlm_core.tasks import RunContext

    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    params = FuseParams()
    settings = fusion_settings(params)
    ctx = RunContext(task="driving.fuse", plugin="driving", requested_device="cpu")
    detector = detector_of(params, ctx)

    def detect(scene: Any) -> np.ndarray:
        [(outputs, _)] = detect_images(detector, scene.images, params)
        return outputs["detections"].xyxy  # type: ignore[union-attr,no-any-return]

    warm, _ = generate(args.start - 1, width, height)
    for _ in range(3):
        range_boxes(warm, 0, detect(warm), settings)
    alone, both, fusion, points, boxes = [], [], [], [], []
    for k, seed in enumerate(range(args.start, args.start + args.count)):
        scene, _ = generate(seed, width, height)
        points.append(len(scene.clouds[0]))
        for order in (0, 1) if k % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            xyxy = detect(scene)
            t1 = time.perf_counter()
            if order == 1:
                range_boxes(scene, 0, xyxy, settings)
                t2 = time.perf_counter()
                both.append(t2 - t0)
                fusion.append(t2 - t1)
                boxes.append(len(xyxy))
            else:
                alone.append(t1 - t0)
    detect_ms, both_ms = 1000 * float(np.median(alone)), 1000 * float(np.median(both))
    report = {
        "command": "python plugins/driving/benchmarks/fusion_cost.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "frames": args.count,
        "seeds": [args.start, args.start + args.count - 1],
        "size": args.size,
        "torch_threads": args.threads,
        "points_per_sweep_median": int(np.median(points)),
        "boxes_per_frame_mean": round(float(np.mean(boxes)), 2),
        "detect_ms_median": round(detect_ms, 2),
        "detect_plus_fusion_ms_median": round(both_ms, 2),
        "fusion_ms_median": round(1000 * float(np.median(fusion)), 2),
        "added_share": round(both_ms / detect_ms - 1.0, 4),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
