"""How well `driving.fuse` measures distances, on generated camera + LiDAR frames.

For each seed, :func:`vlm_driving.lidar_scenes.generate` gives a frame and its truth. The
bundled detector finds the boxes as `driving.fuse` does (default parameters), and
:func:`vlm_driving.fusion.range_boxes` ranges them. Detections are matched one to one to
truth boxes at IoU >= 0.5 (Hungarian on IoU, class-agnostic; the table is by the truth's
class). Reported per class and overall:

- the median absolute distance error of objects within 40 m (target <= 0.5 m) and the median
  relative error beyond (target <= 3% of range), with the share of gross errors (> 1 m or
  > 5%);
- coverage: the share of matched objects with >= 5 LiDAR returns on them that got a distance
  (target >= 95%).

``--boxes truth`` ranges the truth boxes themselves: the fusion without the detector.

Seeds: acceptance figures use 8_200_000.. (the default); the estimator was chosen on
validation seeds 8_100_000.. (``--start 8100000``).

    .venv/bin/python plugins/driving/benchmarks/fusion_accuracy.py --count 300 --boxes both
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Any

import numpy as np

NEAR = 40.0


def match(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one (prediction, truth) pairs at IoU >= ``iou``, most overlap first."""
    import torch
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    if not len(pred) or not len(truth):
        return []
    overlap = box_iou(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(truth)).numpy()
    rows, cols = linear_sum_assignment(-overlap)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if overlap[r, c] >= iou]


def table(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per class (and ``all``): N, the errors and the coverage."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[r["class"]].append(r)
        groups["all"].append(r)
    out = {}
    for name, rows in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        truth = np.array([r["truth"] for r in rows])
        found = np.array([r["distance"] for r in rows], dtype=np.float64)
        returns = np.array([r["truth_points"] for r in rows])
        measured = np.isfinite(found)
        error = np.abs(found - truth)
        near, far = measured & (truth <= NEAR), measured & (truth > NEAR)
        relative = error / truth
        seen = returns >= 5
        out[name] = {
            "objects": len(rows),
            "near_n": int(near.sum()),
            "near_median_abs_m": float(np.median(error[near])) if near.any() else None,
            "near_gross_share": float(np.mean(error[near] > 1.0)) if near.any() else None,
            "far_n": int(far.sum()),
            "far_median_rel": float(np.median(relative[far])) if far.any() else None,
            "far_gross_share": float(np.mean(relative[far] > 0.05)) if far.any() else None,
            "coverage_n": int(seen.sum()),
            "coverage": float(measured[seen].mean()) if seen.any() else None,
        }
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(
        f"{'class':14s} {'N':>5s} {'<=40m N':>8s} {'median |e| m':>13s} {'>1 m':>6s} "
        f"{'>40m N':>7s} {'median rel':>11s} {'>5%':>6s} {'>=5 pts N':>10s} {'coverage':>9s}"
    )
    for name, r in rows.items():
        print(
            f"{name:14s} {r['objects']:5d} {r['near_n']:8d} "
            f"{_fmt(r['near_median_abs_m'], '13.3f')} {_fmt(r['near_gross_share'], '6.1%')} "
            f"{r['far_n']:7d} {_fmt(r['far_median_rel'], '11.2%')} "
            f"{_fmt(r['far_gross_share'], '6.1%')} {r['coverage_n']:10d} "
            f"{_fmt(r['coverage'], '9.1%')}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=8_200_000, help="first seed (acceptance)")
    parser.add_argument("--count", type=int, default=300, help="frames")
    parser.add_argument("--size", default="640x360", help="image WIDTHxHEIGHT")
    parser.add_argument("--boxes", choices=("detector", "truth", "both"), default="both")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch
    from vlm_driving.detect import detect_images, detector_of
    from vlm_driving.fuse import fusion_settings
    from vlm_driving.fusion import range_boxes
    from vlm_driving.lidar_scenes import generate
    from vlm_driving.params import FuseParams

    from vlm_core.tasks import RunContext

    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    params = FuseParams()
    settings = fusion_settings(params)
    modes = ("detector", "truth") if args.boxes == "both" else (args.boxes,)
    detector = None
    if "detector" in modes:
        ctx = RunContext(task="driving.fuse", plugin="driving", requested_device="cpu")
        detector = detector_of(params, ctx)
    records: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    truths = detections = 0
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.count):
        scene, truth = generate(seed, width, height)
        truths += len(truth)
        truth_xyxy = np.array([o.box for o in truth], np.float64).reshape(-1, 4)
        for mode in modes:
            if mode == "truth":
                xyxy, pairs = truth_xyxy, [(i, i) for i in range(len(truth))]
            else:
                assert detector is not None
                [(outputs, _)] = detect_images(detector, scene.images, params)
                xyxy = outputs["detections"].xyxy  # type: ignore[union-attr]
                detections += len(xyxy)
                pairs = match(xyxy, truth_xyxy)
            found = range_boxes(scene, 0, xyxy, settings)
            for p, g in pairs:
                records[mode].append(
                    {
                        "seed": seed,
                        "class": truth[g].cls,
                        "truth": truth[g].distance,
                        "truth_points": truth[g].points,
                        "distance": float(found.distance[p]),
                        "points": int(found.points[p]),
                    }
                )
    report: dict[str, Any] = {
        "command": "python plugins/driving/benchmarks/fusion_accuracy.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "seeds": [args.start, args.start + args.count - 1],
        "frames": args.count,
        "size": args.size,
        "truth_objects": truths,
        "detections": detections,
        "seconds": round(time.perf_counter() - started, 1),
        "settings": settings.__dict__,
    }
    for mode in modes:
        rows = table(records[mode])
        report[mode] = rows
        label = (
            f"{mode} boxes: {len(records[mode])} matched of {truths} truth objects "
            f"in {args.count} frames (seeds {args.start}..{args.start + args.count - 1})"
        )
        print_table(label, rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k not in modes}, indent=2))
    return report


if __name__ == "__main__":
    main()
