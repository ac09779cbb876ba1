"""`driving.detect`'s detector against the same torchvision model called directly, in one run.

    python benchmarks/driving_detect.py --device cuda --out results/   # results/driving_detect.json
    python benchmarks/driving_detect.py --device cpu --size 320x240 --batch 1 --batches 5 \\
        --models fcos_resnet50_fpn --no-fast --out results/

For each of torchvision's fasterrcnn_resnet50_fpn_v2 and fcos_resnet50_fpn (random COCO-shaped
weights: the machine is offline, and speed does not depend on the values) at 720p, fp32, batch
8 (the protocol of shared/anchors: 88 and 155 img/s on one H200), one COCO checkpoint (91
classes) is saved and both sides run *the same network with the same head*:

- ``raw``: torchvision's own builder with the plugin's classes (9 with the background) and the
  plugin's input size, loaded with the checkpoint cut to those classes by the plugin's own
  mapping (:func:`vlm_driving.models.map_coco_state`); called as
  ``model(list_of_float_tensors_on_the_device)`` under ``torch.inference_mode``;
- ``plugin``: the plugin's :class:`~vlm_driving.detector.Detector` loaded from the same
  checkpoint through ``load_detector(coco_model=..., coco_weights=...)``, called on uint8
  (H, W, 3) frames in host memory as a video reaches it — the copy to the device, the
  conversion to float and the outputs back as numpy arrays included;
- ``fast``: the plugin with bf16 autocast and channels-last — its fast path; with
  ``--compile`` also ``compiled`` (the same under torch.compile). A variant that fails to load
  or to run is recorded as ``<label>_error`` and left out of the timing.

Before timing, the row records that the two are the same model: ``raw_classes`` and
``plugin_classes`` (rows of the classifier, background included), ``same_weights`` (every
tensor of the state dicts equal) and ``mismatch`` (inference settings that differ: input size,
score threshold, NMS, detections per image, proposal counts; empty when none do).

Timing: :func:`vlm_core.bench.timing.interleave` — after ``--warmup`` calls of each, one batch
of each variant in turn for ``--batches`` rounds (CUDA events on a GPU). ``<label>_img_s`` is
the median over the rounds, ``<label>_spread`` its quartiles, extremes and n;
``<label>_over_raw`` is the ratio of medians (the acceptance figure for ``plugin``: ≥ 1.0) and
``<label>_paired_over_raw`` the median of the rounds' own ratios.

Output: one JSON line per model on stdout, and ``OUT/driving_detect.json``:
``{"device", "torch", "method", "rows": [row, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "driving"))

MODELS = {"fasterrcnn_resnet50_fpn_v2": "fasterrcnn", "fcos_resnet50_fpn": "fcos"}
METHOD = (
    "same network and head on both sides (the COCO checkpoint cut to the plugin's classes), "
    "variants alternating one batch each per round in one process, medians over the rounds"
)


def family_of(name: str) -> str:
    """The detector family of a torchvision builder name (fcos, retinanet, fasterrcnn)."""
    return name.split("_", 1)[0]


def class_rows(module: Any) -> int:
    """How many classes (background included) the detector's classifier scores."""
    if hasattr(module, "roi_heads"):
        return int(module.roi_heads.box_predictor.cls_score.out_features)
    return int(module.head.classification_head.num_classes)


def inference_settings(module: Any) -> dict[str, Any]:
    """What decides a detector's work at inference besides its weights: input size, score
    threshold, NMS IoU, detections per image and (two-stage) proposal counts."""
    head = getattr(module, "roi_heads", module)
    settings: dict[str, Any] = {
        "min_size": tuple(module.transform.min_size),
        "max_size": int(module.transform.max_size),
        "score_thresh": float(head.score_thresh),
        "nms_thresh": float(head.nms_thresh),
        "detections_per_img": int(head.detections_per_img),
    }
    if hasattr(module, "topk_candidates"):
        settings["topk_candidates"] = int(module.topk_candidates)
    if hasattr(module, "rpn"):
        rpn = module.rpn
        settings["rpn_pre_nms_top_n"] = int(rpn._pre_nms_top_n["testing"])
        settings["rpn_post_nms_top_n"] = int(rpn._post_nms_top_n["testing"])
        settings["rpn_score_thresh"] = float(rpn.score_thresh)
        settings["rpn_nms_thresh"] = float(rpn.nms_thresh)
    return settings


def raw_detector(name: str, coco_state: dict[str, Any], min_size: int, max_size: int) -> Any:
    """torchvision's ``name`` with the plugin's classes and input size, loaded with the COCO
    state cut to those classes by the plugin's own mapping — the plugin's network, built and
    called the torchvision way."""
    from torchvision.models import detection
    from vlm_driving.classes import CLASSES, COCO_TO_DRIVING
    from vlm_driving.models import map_coco_state

    model = getattr(detection, name)(
        weights=None,
        weights_backbone=None,
        num_classes=len(CLASSES) + 1,
        min_size=min_size,
        max_size=max_size,
    )
    model.load_state_dict(map_coco_state(coco_state, family_of(name), CLASSES, COCO_TO_DRIVING))
    return model.eval()


def same_weights(a: Any, b: Any) -> bool:
    """Every tensor of the two modules' state dicts equal (same keys, shapes and values)."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa
    )


def bench(
    name: str,
    device: str,
    size: tuple[int, int],
    batch: int,
    batches: int,
    compile: bool,
    fast: bool = True,
    warmup: int = 2,
) -> dict[str, Any]:
    """One detector raw, through the plugin, and (``fast``) through its bf16 fast path, in
    ``batches`` alternating rounds of one batch each."""
    import numpy as np
    import torch
    from torchvision.models import detection
    from vlm_driving.detector import load_detector

    from vlm_core.bench.timing import interleave, spread

    torch.manual_seed(0)
    coco = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=91)
    coco_state = {k: v.detach().clone() for k, v in coco.state_dict().items()}
    del coco
    h, w = size
    row: dict[str, Any] = {"model": name, "size": f"{w}x{h}", "batch": batch, "batches": batches}
    variants = [("plugin", "float32", False)]
    if fast:
        variants.append(("fast", "bfloat16", False))
    if compile:
        variants.append(("compiled", "bfloat16", True))
    frames = [
        np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i in range(batch)
    ]
    calls: dict[str, Any] = {}
    detectors: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}_coco.pth"
        torch.save(coco_state, path)
        for label, dtype, compiled in variants:
            row[f"{label}_policy"] = {"dtype": dtype, "channels_last": True, "compile": compiled}
            try:
                detector = load_detector(
                    coco_model=name,
                    coco_weights=str(path),
                    device=device,
                    dtype=dtype,
                    compile=compiled,
                )
                detector(frames)  # a variant that cannot run (a compile failure) is left out
            except Exception as exc:  # it must not hide the other figures
                row[f"{label}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                continue
            detectors[label] = detector
            calls[label] = lambda d=detector: d(frames)
    reference = detectors.get("plugin") or next(iter(detectors.values()), None)
    if reference is None:
        return row
    raw = raw_detector(name, coco_state, reference.min_size, reference.max_size).to(device)
    row["raw_classes"] = class_rows(raw)
    row["plugin_classes"] = class_rows(reference.module)
    row["same_weights"] = same_weights(raw, reference.module)
    theirs, ours = inference_settings(raw), inference_settings(reference.module)
    row["mismatch"] = {k: [theirs.get(k), ours.get(k)] for k in theirs | ours
                       if theirs.get(k) != ours.get(k)}  # fmt: skip
    tensors = [torch.from_numpy(f).to(device).permute(2, 0, 1).float().div(255) for f in frames]

    def call_raw() -> None:
        with torch.inference_mode():
            raw(tensors)

    timing = interleave({"raw": call_raw, **calls}, torch.device(device), warmup=warmup,
                        rounds=batches)  # fmt: skip
    rates = {label: timing.rates(label, batch) for label in timing.seconds}
    for label, values in rates.items():
        row[f"{label}_img_s"] = round(statistics.median(values), 2)
        row[f"{label}_spread"] = spread(values, 2)
    for label in calls:
        row[f"{label}_over_raw"] = round(
            statistics.median(rates[label]) / statistics.median(rates["raw"]), 3
        )
        paired = [a / b for a, b in zip(rates[label], rates["raw"], strict=True)]
        row[f"{label}_paired_over_raw"] = round(statistics.median(paired), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=10, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each first")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    parser.add_argument("--no-fast", action="store_true", help="leave the bf16 fast path out")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rows = []
    for name in args.models.split(","):
        row = bench(name, args.device, (h, w), args.batch, args.batches, args.compile,
                    fast=not args.no_fast, warmup=args.warmup)  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    import torch

    report = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "method": METHOD,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "driving_detect.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
