"""Are the bundled detector's calibrated scores honest, and what did calibrating them change?

On the 200 held-out generated scenes of the mAP figures (seeds 900000-900199; the score
temperature was fitted on seeds 710000-710399):

- expected calibration error (15 bins) of the box scores, raw (T = 1) and calibrated (the
  temperature the weights' card records), over every box the detector returns down to a raw
  score of 0.05 (the population the temperature was fitted on), and over the boxes a run
  reports at the default ``score_threshold`` of 0.4 (raw scores >= 0.4 before, calibrated
  scores >= 0.4 after), each with its number of boxes; a box is right when it matches an
  object of its class at IoU >= 0.5;
- precision, recall and F1 of the boxes reported at the default threshold, before and after;
- COCO mAP raw and calibrated over the same boxes (every box down to a raw 0.05: the order is
  unchanged, so the mAP must be too), and with a calibrated floor of 0.05 instead (the boxes
  under it dropped).

    OMP_NUM_THREADS=1 .venv/bin/python plugins/driving/benchmarks/calibration.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import Any

#: The default score threshold of `driving.detect`.
DEFAULT_THRESHOLD = 0.4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    import numpy as np
    import torch
    from vlm_driving.calibration import box_logits
    from vlm_driving.detector import Detector, load_detector
    from vlm_driving.heldout import HELDOUT_SEED, evaluate_scenes
    from vlm_driving.scenes import scene

    from vlm_core.familiarity.calibration import expected_calibration_error

    torch.set_num_threads(1)
    detector = load_detector()
    raw = Detector(detector.loaded, temperature=1.0)
    t = detector.score_temperature
    seeds = range(HELDOUT_SEED, HELDOUT_SEED + args.scenes)
    frames = [scene(s) for s in seeds]
    objects = sum(len(f.labels) for f in frames)
    logits, right = box_logits(detector, ((f.image, f.xyxy, f.labels) for f in frames))
    labels = right.astype(np.int64)
    raw_scores = 1.0 / (1.0 + np.exp(-logits))
    cal_scores = 1.0 / (1.0 + np.exp(-logits / t))

    def shown(scores: np.ndarray) -> dict[str, float]:
        keep = scores >= DEFAULT_THRESHOLD
        tp = int(right[keep].sum())
        precision, recall = tp / max(int(keep.sum()), 1), tp / max(objects, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        return {
            "boxes": int(keep.sum()),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
        }

    before_shown, after_shown = raw_scores >= DEFAULT_THRESHOLD, cal_scores >= DEFAULT_THRESHOLD
    report: dict[str, Any] = {
        "scenes": [HELDOUT_SEED, HELDOUT_SEED + args.scenes - 1],
        "objects": objects,
        "temperature": t,
        "ece_all_boxes": {
            "boxes": len(labels),
            "right": int(right.sum()),
            "before": round(expected_calibration_error(logits, labels), 4),
            "after": round(expected_calibration_error(logits, labels, t), 4),
        },
        "ece_reported_boxes": {
            "before": round(
                expected_calibration_error(logits[before_shown], labels[before_shown]), 4
            ),
            "boxes_before": int(before_shown.sum()),
            "after": round(
                expected_calibration_error(logits[after_shown], labels[after_shown], t), 4
            ),
            "boxes_after": int(after_shown.sum()),
        },
        "at_default_threshold": {"before": shown(raw_scores), "after": shown(cal_scores)},
    }
    print(json.dumps(report, indent=2), flush=True)
    maps = {
        "raw": evaluate_scenes(raw, count=args.scenes),
        "calibrated": evaluate_scenes(detector, count=args.scenes),
        "calibrated, floor 0.05": evaluate_scenes(detector, count=args.scenes, floor=0.05),
    }
    report["map"] = {
        name: {k: m["cocoeval"][k] for k in ("map", "map_50", "map_75")} for name, m in maps.items()
    }
    print(json.dumps(report["map"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
