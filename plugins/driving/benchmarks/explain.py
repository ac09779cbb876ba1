"""Are the maps that explain a `driving.detect` box faithful, and what do they cost on a CPU?

On held-out generated scenes at 640x360 (the sample's size), the top-scoring box of each scene
is explained by every method `driving.detect` declares, through the task's own builder
(:func:`vlm_driving.explain_target.detect_target`, the one ``vlm run ... -p explainer=M``
calls) at the task's default parameters and each method's default settings. For each method:

- the share of scenes whose deletion AUC is below the random-order deletion AUC, and whose
  insertion AUC is above the random-order one (:func:`vlm_core.explain.faithfulness.faithfulness`:
  20 steps, 3 random orders; the goal is >= 90% for deletion), with the medians of the areas;
- the attribution's time per input on the CPU (median and range; the detection and the
  faithfulness curves not counted) and its forward passes.

The scenes use seeds 930000 onwards, which nothing else used: the detector trained on 0-2999,
its familiarity model was fitted on 700000-701999, its score temperature on 710000-710399,
familiarity choices on 720000-722099, the familiarity benchmark draws from 800000-800999 and the
mAP figures from 900000-900199; the blurred baseline was chosen on 920000-920009 and the tests
use 940000-940002. Methods run in turn on each scene, so a busy machine slows them alike.

    OMP_NUM_THREADS=1 .venv/bin/python plugins/driving/benchmarks/explain.py [--scenes 30]
        [--quick] [--methods gradcam,occlusion] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

#: The first held-out seed (see the module docstring for the ranges it avoids).
SEED = 930000
SIZE = (640, 360)  # width, height


def _spread(values: list[float], digits: int = 3) -> dict[str, float]:
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _share(rows: list[dict[str, Any]], key: str) -> float:
    return round(sum(bool(r[key]) for r in rows) / max(len(rows), 1), 3)


def measure(scenes: int, methods: list[str], seed: int = SEED) -> dict[str, Any]:
    """Explain the top box of ``scenes`` held-out scenes with each of ``methods``."""
    import numpy as np
    import torch
    from vlm_driving.detect import detect_images
    from vlm_driving.detector import load_detector
    from vlm_driving.explain_target import detect_target
    from vlm_driving.params import DetectParams
    from vlm_driving.scenes import scene

    from vlm_core.explain.attribution import attribute
    from vlm_core.explain.faithfulness import faithfulness
    from vlm_core.tasks import RunContext
    from vlm_core.types import Image

    detector = load_detector()
    params = DetectParams()
    ctx = RunContext(task="driving.detect", plugin="driving", requested_device="cpu")
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    skipped: list[int] = []
    start_gap: list[float] = []
    baseline_scores: list[float] = []
    labels: list[str] = []
    for s in range(seed, seed + scenes):
        image = Image(pixels=scene(s, *SIZE).image, name=f"scene-{s}")
        ((outputs, _),) = detect_images(detector, [image], params)
        if not len(outputs["detections"].scores):
            skipped.append(s)
            continue
        target = detect_target(image, outputs, params, ctx)
        extra = target.extra or {}
        labels.append(str(extra.get("label")))
        with torch.no_grad():
            start_gap.append(abs(float(target.forward(target.inputs)[0]) - extra["box_score"]))
            baseline_scores.append(float(target.forward(target.baseline)[0]))
        for method in methods:
            t0 = time.perf_counter()
            raw = attribute(target, method)
            seconds = time.perf_counter() - t0
            found = faithfulness(target, raw.values)
            rows[method].append(
                {
                    "seed": s,
                    "label": extra.get("label"),
                    "score": extra.get("box_score"),
                    "seconds": seconds,
                    "forward_passes": raw.details.get("forward_passes"),
                    # Integrated Gradients: the steps the engine settled on, and how complete
                    **{
                        f"ig_{k}": raw.details[k]
                        for k in ("steps", "completeness_relative")
                        if k in raw.details
                    },
                    **{k: v for k, v in found.items() if not k.endswith("_curve")},
                }
            )
            print(f"scene {s} {method}: {seconds:.1f} s, deletion {found['deletion_auc']:.3f} "
                  f"(random {found['deletion_auc_random']:.3f}), insertion "
                  f"{found['insertion_auc']:.3f} (random {found['insertion_auc_random']:.3f})",
                  file=sys.stderr, flush=True)  # fmt: skip
    summary = []
    for method, found in rows.items():
        n = len(found)
        summary.append(
            {
                "method": method,
                "n": n,
                "deletion_better": _share(found, "deletion_better_than_random"),
                "insertion_better": _share(found, "insertion_better_than_random"),
                "deletion_auc": _spread([r["deletion_auc"] for r in found]),
                "deletion_auc_random": _spread([r["deletion_auc_random"] for r in found]),
                "insertion_auc": _spread([r["insertion_auc"] for r in found]),
                "insertion_auc_random": _spread([r["insertion_auc_random"] for r in found]),
                "s_per_input": _spread([r["seconds"] for r in found], 2),
                "forward_passes": _spread([float(r["forward_passes"] or 0) for r in found], 0),
                **(
                    {
                        "ig_steps": _spread([float(r["ig_steps"]) for r in found], 0),
                        "ig_completeness_relative": _spread(
                            [r["ig_completeness_relative"] for r in found], 4
                        ),
                    }
                    if found and "ig_steps" in found[0]
                    else {}
                ),
            }
        )
    return {
        "seeds": [seed, seed + scenes - 1],
        "size": list(SIZE),
        "scenes_without_a_box": skipped,
        "torch_threads": torch.get_num_threads(),
        "labels": {k: labels.count(k) for k in sorted(set(labels))},
        "max_abs_forward_minus_score": float(np.max(start_gap)) if start_gap else None,
        "baseline_score": _spread(baseline_scores, 4),
        "methods": summary,
        "inputs": rows,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| method | N | deletion < random | insertion > random | deletion AUC (random) "
        "| insertion AUC (random) | s per input, median (range) | forward passes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["methods"]:
        d, dr = row["deletion_auc"], row["deletion_auc_random"]
        i, ir = row["insertion_auc"], row["insertion_auc_random"]
        t = row["s_per_input"]
        if not row["n"]:
            continue
        lines.append(
            f"| {row['method']} | {row['n']} | {row['deletion_better']:.0%} "
            f"| {row['insertion_better']:.0%} | {d['median']:.3f} ({dr['median']:.3f}) "
            f"| {i['median']:.3f} ({ir['median']:.3f}) "
            f"| {t['median']:.2f} ({t['min']:.2f}-{t['max']:.2f}) "
            f"| {row['forward_passes']['median']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    from vlm_driving.explain_target import EXPLAINERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=30, help="held-out scenes (one box each)")
    parser.add_argument("--quick", action="store_true", help="3 scenes: a smoke run")
    parser.add_argument("--methods", default=",".join(EXPLAINERS),
                        help="comma-separated methods (default: every declared one)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=SEED, help="first scene seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(EXPLAINERS))
    if unknown:
        parser.error(f"driving.detect does not declare {', '.join(unknown)}")

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report = measure(3 if args.quick else args.scenes, methods, args.seed)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(table(report))
    print()
    print(
        f"{report['seeds'][0]}-{report['seeds'][1]} at {SIZE[0]}x{SIZE[1]}, the top box of each "
        f"scene ({', '.join(f'{k} {v}' for k, v in report['labels'].items())}); scenes without "
        f"a box: {len(report['scenes_without_a_box'])}; |forward - reported score| at most "
        f"{report['max_abs_forward_minus_score']:.2g}; the box's score on the blurred baseline: "
        f"median {report['baseline_score'].get('median')} (max "
        f"{report['baseline_score'].get('max')}); {report['torch_threads']} torch thread(s); "
        f"{report['wall_s']} s"
    )
    for row in report["methods"]:
        if "ig_steps" in row:
            steps, gap = row["ig_steps"], row["ig_completeness_relative"]
            print(f"integrated_gradients: steps median {steps['median']:.0f} ({steps['min']:.0f}-"
                  f"{steps['max']:.0f}), completeness error at most {gap['max']:.2%} of the "
                  "score's change")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
