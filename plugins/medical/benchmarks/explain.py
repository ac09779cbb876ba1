"""How good are medical.classify's and medical.segment's explanations? The acceptance figures of
``-p explainer=...`` on held-out generated data, through the task's own run function and
explain builder (:mod:`vlm_medical.explain_targets`) and the core's engine, as a run explains:

(a) per method (Grad-CAM, Integrated Gradients, Occlusion, KernelSHAP, LIME), on
    ``medical.classify`` (32³ volumes, lesion and normal alternating, the predicted class's
    logit) and ``medical.segment`` in 2D (128² images, every predicted lesion's summed logit
    margin): the fraction of inputs whose deletion AUC is below the random-order deletion AUC
    (:func:`vlm_core.explain.faithfulness.faithfulness`: 20 steps, 3 random orders), and the
    method's time per input (median wall and process CPU seconds; the faithfulness curves
    are timed apart);
(b) Integrated Gradients' completeness on ``medical.classify``: |sum(attributions) - (f(x) -
    f(baseline))| / |f(x) - f(baseline)| at each of ``--steps`` (Gauss-Legendre steps);
(c) on the inputs that hold a lesion: whether the top 5% of Integrated Gradients' and
    Grad-CAM's pixels (voxels) fall inside the true lesion mask — "inside" meaning more than
    half of them are (the brief's criterion) — and, because a 32³ volume's lesions cover 0.1%
    to 1.4% of it (less than half of 5%, so that criterion cannot be met there), two more:
    more than half of the top-k inside for k = the mask's size (precision at the mask's size),
    and the map's peak inside the mask (the pointing game).

Seeds: the weights were trained on seed 0; their figures, familiarity models, temperature
and layer choice used 1000, 2000-2200, 3000-3200, 4000-4200; the tests use 4500-4506 and
5000; the explain baseline was chosen on 7000 (classify) and 7100 (segment). This benchmark
draws from 6000 (classify) and 6100 (segment 2D) only.

    .venv/bin/python plugins/medical/benchmarks/explain.py --json explain.json
    .venv/bin/python plugins/medical/benchmarks/explain.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("gradcam", "integrated_gradients", "occlusion", "kernel_shap", "lime")
SEEDS = {"classify": 6000, "segment": 6100}


def _timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _inside(values: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The localisation criteria of (c) for one map on the model's grid and the true mask."""
    flat, truth = values.ravel(), mask.ravel().astype(bool)
    # highest first, ties (flat maps) broken by a fixed random order
    order = np.lexsort((np.random.default_rng(0).random(flat.size), -flat))
    top5 = order[: max(1, round(0.05 * flat.size))]
    topk = order[: max(1, int(truth.sum()))]
    return {
        "top5_inside": float(truth[top5].mean()),
        "topk_inside": float(truth[topk].mean()),
        "peak_inside": bool(truth[order[0]]),
        "mask_fraction": float(truth.mean()),
    }


def _explain(target: Any, method: str, steps: int | None) -> dict[str, Any]:
    from vlm_core.explain.attribution import attribute
    from vlm_core.explain.faithfulness import faithfulness

    raw, wall, cpu = _timed(lambda: attribute(target, method, steps))
    faith, faith_wall, _ = _timed(lambda: faithfulness(target, raw.values))
    values = raw.values.double().cpu().numpy()
    return {
        "values": values,
        "finite": bool(np.isfinite(values).all()),
        "seconds": wall,
        "cpu_seconds": cpu,
        "faithfulness_seconds": faith_wall,
        "deletion_auc": faith["deletion_auc"],
        "deletion_auc_random": faith["deletion_auc_random"],
        "deletion_better": bool(faith["deletion_better_than_random"]),
        "insertion_better": bool(faith["insertion_better_than_random"]),
        "completeness_relative": raw.details.get("completeness_relative"),
        "output_minus_baseline": raw.details.get("output_minus_baseline"),
        "steps": raw.details.get("steps"),
    }


def _cases(task: str, n: int, seed: int) -> Any:
    """(item, true mask on the model's grid, has lesion) for ``n`` generated inputs."""
    from vlm_medical.synthetic import make_image
    from vlm_medical.synthetic_classes import make_case

    from vlm_core.types import Image, Volume

    rng = np.random.RandomState(seed)
    for i in range(n):
        if task == "classify":
            lesion = i % 2 == 0
            image, mask = make_case(rng, lesion)
            yield Volume(array=image, name=f"case_{seed}_{i}"), mask, lesion
        else:
            image, mask = make_image(rng, 128)
            # an image's rows are j, columns i: the task reads it back as (i, j) = image
            yield Image(pixels=np.ascontiguousarray(image.T), name=f"image_{seed}_{i}"), mask, True


def measure(
    task: str,
    n: int,
    seed: int,
    methods: tuple[str, ...],
    ig_steps: int | None,
    extra_steps: tuple[int, ...],
    log: Callable[[str], None],
    cam_layer: str = "auto",
) -> list[dict[str, Any]]:
    """One record per input: the target, each method's figures, the localisation criteria."""
    import torch
    from vlm_medical import classify, segment
    from vlm_medical.classify_params import ClassifyParams
    from vlm_medical.explain_targets import classify_target, segment_target
    from vlm_medical.params import SegmentParams

    from vlm_core.tasks import RunContext

    task_id = f"medical.{task}"
    ctx = RunContext(task=task_id, plugin="medical", requested_device="cpu")
    records = []
    for i, (item, mask, lesion) in enumerate(_cases(task, n, seed)):
        if task == "classify":  # the task answers as in a run
            params: Any = ClassifyParams(cam_layer=cam_layer)
            (outputs,) = classify.run([item], params, ctx)
        else:
            params = SegmentParams()
            (outputs,) = segment.run([item], params, ctx)
        build = classify_target if task == "classify" else segment_target
        target = build(item, outputs, params, ctx)
        record: dict[str, Any] = {
            "input": item.name,
            "lesion": lesion,
            "what": target.what,
            "mask_voxels": int(mask.sum()),
            "methods": {},
        }
        if task == "classify":
            record["predicted"] = outputs["class"].text
        for method in methods:
            steps = ig_steps if method == "integrated_gradients" else None
            found = _explain(target, method, steps)
            if lesion and method in ("integrated_gradients", "gradcam"):
                found.update(_inside(found["values"], mask))
            del found["values"]
            record["methods"][method] = found
        if task == "classify" and extra_steps:
            from vlm_core.explain.attribution import attribute

            record["completeness"] = {
                str(s): attribute(target, "integrated_gradients", s).details[
                    "completeness_relative"]
                for s in extra_steps
            }  # fmt: skip
            with torch.no_grad():
                change = target.forward(target.inputs)[0] - target.forward(target.baseline)[0]
            record["output_minus_baseline"] = float(change)
        records.append(record)
        log(f"{task} {i + 1}/{n}: " + ", ".join(
            f"{m} {'<' if r['deletion_better'] else '>='} random {r['seconds']:.2f}s"
            for m, r in record["methods"].items()))  # fmt: skip
    return records


def _share(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarise(task: str, records: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(records), "methods": {}}
    for method in methods:
        rows = [r["methods"][method] for r in records]
        positives = [r["methods"][method] for r in records if r["lesion"]]
        summary: dict[str, Any] = {
            "n": len(rows),
            "deletion_better_fraction": float(np.mean([r["deletion_better"] for r in rows])),
            "insertion_better_fraction": float(np.mean([r["insertion_better"] for r in rows])),
            "median_deletion_auc": _median([r["deletion_auc"] for r in rows]),
            "median_deletion_auc_random": _median([r["deletion_auc_random"] for r in rows]),
            "median_seconds": _median([r["seconds"] for r in rows]),
            "median_cpu_seconds": _median([r["cpu_seconds"] for r in rows]),
            "median_faithfulness_seconds": _median([r["faithfulness_seconds"] for r in rows]),
            "all_finite": all(r["finite"] for r in rows),
        }
        if task == "classify":
            for cls in ("lesion", "normal"):
                part = [r["methods"][method] for r in records if r["predicted"] == cls]
                summary[f"deletion_better_fraction_predicted_{cls}"] = (
                    float(np.mean([r["deletion_better"] for r in part])) if part else None
                )
                summary[f"n_predicted_{cls}"] = len(part)
        if positives and "top5_inside" in positives[0]:
            summary["localisation"] = {
                "n": len(positives),
                "top5_majority_fraction": _share([r["top5_inside"] > 0.5 for r in positives]),
                "topk_majority_fraction": _share([r["topk_inside"] > 0.5 for r in positives]),
                "peak_inside_fraction": float(np.mean([r["peak_inside"] for r in positives])),
                "median_top5_inside": _median([r["top5_inside"] for r in positives]),
                "median_mask_fraction": _median([r["mask_fraction"] for r in positives]),
            }  # fmt: skip
            if task == "classify":
                hits = [r["methods"][method] for r in records
                        if r["lesion"] and r["predicted"] == "lesion"]  # fmt: skip
                summary["localisation"]["n_predicted_lesion"] = len(hits)
                summary["localisation"]["topk_majority_fraction_predicted_lesion"] = (
                    float(np.mean([r["topk_inside"] > 0.5 for r in hits])) if hits else None
                )
        out["methods"][method] = summary
    if task == "classify":
        out["completeness"] = _completeness(records)
    return out


def _completeness(records: list[dict[str, Any]]) -> dict[str, Any]:
    by_steps: dict[str, dict[str, list[float]]] = {}
    for r in records:
        ig = r["methods"].get("integrated_gradients")
        found = dict(r.get("completeness", {}))
        if ig is not None and ig["completeness_relative"] is not None:
            found[str(ig["steps"])] = ig["completeness_relative"]
        change = r.get("output_minus_baseline", (ig or {}).get("output_minus_baseline"))
        for steps, error in found.items():
            part = by_steps.setdefault(steps, {"all": [], "lesion": [], "normal": [],
                                               "|f(x) - f(baseline)| >= 1": []})  # fmt: skip
            part["all"].append(error)
            part["lesion" if r["lesion"] else "normal"].append(error)
            if change is not None and abs(change) >= 1.0:
                part["|f(x) - f(baseline)| >= 1"].append(error)
    out = {}
    for steps, parts in sorted(by_steps.items(), key=lambda kv: int(kv[0])):
        out[steps] = {
            name: {
                "n": len(errors),
                "median": _median(errors),
                "p90": float(np.percentile(errors, 90)) if errors else float("nan"),
                "max": max(errors) if errors else float("nan"),
                "within_1pct": float(np.mean([e <= 0.01 for e in errors])) if errors else None,
            }
            for name, errors in parts.items()
        }
    return out


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| task | method | N | deletion AUC < random | median deletion AUC (random) | "
        "insertion AUC > random | s / input (median wall) | CPU s / input |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, found in results["tasks"].items():
        for method, s in found["methods"].items():
            lines.append(
                f"| {task} | {method} | {s['n']} | {_pct(s['deletion_better_fraction'])} | "
                f"{s['median_deletion_auc']:.3g} ({s['median_deletion_auc_random']:.3g}) | "
                f"{_pct(s['insertion_better_fraction'])} | {s['median_seconds']:.2f} | "
                f"{s['median_cpu_seconds']:.2f} |"
            )
    classify = results["tasks"].get("medical.classify")
    if classify:
        lines += ["", "medical.classify, deletion AUC < random by predicted class:", "",
                  "| method | predicted lesion | predicted normal |", "|---|---|---|"]  # fmt: skip
        for method, s in classify["methods"].items():
            lines.append(
                f"| {method} | {_pct(s['deletion_better_fraction_predicted_lesion'])} of "
                f"{s['n_predicted_lesion']} | "
                f"{_pct(s['deletion_better_fraction_predicted_normal'])} of "
                f"{s['n_predicted_normal']} |"
            )
        if classify.get("completeness"):
            lines += ["", "Integrated Gradients' completeness on medical.classify "
                      "(|sum - (f(x) - f(baseline))| / |f(x) - f(baseline)|):", "",
                      "| steps | inputs | N | median | 90th percentile | max | within 1% |",
                      "|---|---|---|---|---|---|---|"]  # fmt: skip
            for steps, parts in classify["completeness"].items():
                for name, p in parts.items():
                    lines.append(
                        f"| {steps} | {name} | {p['n']} | {100 * p['median']:.2f}% | "
                        f"{100 * p['p90']:.2f}% | {100 * p['max']:.2f}% | "
                        f"{_pct(p['within_1pct'])} |"
                    )
    lines += ["", "Localisation on inputs with a lesion (true mask):", "",
              "| task | method | N | top 5%: majority inside | top-k (k = mask size): majority "
              "inside | peak inside | median share of top 5% inside | median mask share |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for task, found in results["tasks"].items():
        for method, s in found["methods"].items():
            loc = s.get("localisation")
            if not loc:
                continue
            lines.append(
                f"| {task} | {method} | {loc['n']} | {_pct(loc['top5_majority_fraction'])} | "
                f"{_pct(loc['topk_majority_fraction'])} | {_pct(loc['peak_inside_fraction'])} | "
                f"{_pct(loc['median_top5_inside'])} | {100 * loc['median_mask_fraction']:.2f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n-classify", type=int, default=50, help="volumes (lesion/normal alternating)"
    )
    parser.add_argument("--n-segment", type=int, default=50, help="2D images")
    parser.add_argument("--quick", action="store_true", help="6 inputs per task, no extra IG steps")
    parser.add_argument("--tasks", default="classify,segment", help="which tasks to measure")
    parser.add_argument("--cam-layer", default="auto", help="medical.classify's cam_layer")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--ig-steps",
        type=int,
        default=None,
        help="Integrated Gradients' steps in (a) and (c) (default: the engine's)",
    )
    parser.add_argument(
        "--steps",
        default="128,256",
        help="further IG step counts for the completeness figure (b); '' for none",
    )
    parser.add_argument("--seed-classify", type=int, default=SEEDS["classify"])
    parser.add_argument("--seed-segment", type=int, default=SEEDS["segment"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--json", type=Path, default=None, help="write every figure and record here"
    )
    args = parser.parse_args(argv)  # fmt: skip

    import torch

    torch.set_num_threads(args.threads)
    methods = tuple(m for m in args.methods.split(",") if m)
    extra = tuple(int(s) for s in args.steps.split(",") if s) if not args.quick else ()
    n_cls, n_seg = (6, 6) if args.quick else (args.n_classify, args.n_segment)
    started = time.perf_counter()
    tasks = args.tasks.split(",")
    records = {
        "medical.classify": measure("classify", n_cls, args.seed_classify, methods, args.ig_steps,
                                    extra, lambda m: print(m, file=sys.stderr), args.cam_layer)
        if "classify" in tasks else [],
        "medical.segment": measure("segment", n_seg, args.seed_segment, methods, args.ig_steps,
                                   (), lambda m: print(m, file=sys.stderr))
        if "segment" in tasks else [],
    }  # fmt: skip
    results = {
        "command": " ".join(["plugins/medical/benchmarks/explain.py", *(argv or sys.argv[1:])]),
        "seeds": {"medical.classify": args.seed_classify, "medical.segment": args.seed_segment},
        "threads": args.threads,
        "seconds": round(time.perf_counter() - started, 1),
        "tasks": {t: summarise(t.split(".")[1], r, methods) for t, r in records.items() if r},
    }
    print(markdown(results))
    print(
        f"\n{results['seconds']} s in all; seeds {results['seeds']}; torch threads {args.threads}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({**results, "records": records}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
