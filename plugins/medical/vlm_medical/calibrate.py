"""Temperature scaling for `medical.classify`: confidences that mean what they say.

A classifier's softmax is usually over-confident; dividing its logits by one temperature ``T``
fitted on held-out in-domain volumes (Guo et al. 2017, the core's
:func:`vlm_core.familiarity.calibration.calibrate`) keeps every prediction and makes a
probability of 0.8 right about 80% of the time. The fitted ``T`` and the expected calibration
error before and after go into the weights' card (``model.json`` ``card.calibration``); every
run divides its logits by it.

    python -m vlm_medical.calibrate --data HELD_OUT --weights WEIGHTS [--write]

``HELD_OUT`` is a folder in the layout ``vlm train medical.classify`` reads (every file of it
is used, whatever its split) and must not hold the volumes the weights were trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vlm_core.errors import VLMError

#: Volumes per forward pass when the logits are collected.
BATCH = 32


def held_out_logits(weights: str, data: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(logits (N, C), labels (N,), loaded model)`` of every file under ``data``, prepared
    as a run prepares an input (the weights' intensity preset and cube) and run through the
    weights' network; the logits are the network's own, before any temperature."""
    import torch

    from vlm_core.weights import load_model
    from vlm_medical.classify import CLASSIFIER, prepare, read_class_data, read_item

    loaded = load_model(weights, CLASSIFIER, device="cpu")
    card = loaded.card
    found = read_class_data(data, val_fraction=0.2, seed=0)
    if list(found.class_names) != list(card.get("class_names") or []):
        raise VLMError(
            f"{data}: classes {list(found.class_names)}, but the weights were trained on "
            f"{card.get('class_names')}"
        )
    pre = card.get("preprocessing") or {}
    preset, size = str(pre.get("intensity", "auto")), int(pre.get("size", 32))
    items = [*found.train, *found.val]
    rows: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(items), BATCH):
            part = items[start : start + BATCH]
            batch = torch.stack(
                [prepare(torch.from_numpy(read_item(i["image"])), preset, size) for i in part]
            )
            rows.append(loaded.module(batch).float().numpy())
    labels = np.array([i["label"] for i in items], dtype=np.int64)
    return np.concatenate(rows), labels, loaded


def record(loaded: Any, report: dict[str, Any], data: Path) -> Path:
    """Write ``report`` (a calibration report's dict) into the card of the weights' sidecar
    (``model.json`` beside the weights file), atomically."""
    from vlm_core.training.data_hash import data_fingerprint
    from vlm_core.weights.layout import record_in_card

    fingerprint = data_fingerprint(data)
    entry = {
        "method": "temperature scaling (NLL on held-out in-domain volumes)",
        **report,
        "data": {k: fingerprint[k] for k in ("sha256", "files") if k in fingerprint},
    }
    return record_in_card(Path(loaded.path), "calibration", entry)


def main(argv: list[str] | None = None) -> int:
    from vlm_core.familiarity.calibration import calibrate

    parser = argparse.ArgumentParser(
        prog="python -m vlm_medical.calibrate",
        description="Fit medical.classify's temperature on held-out in-domain volumes.",
    )
    parser.add_argument("--data", type=Path, required=True, help="held-out labelled volumes")
    parser.add_argument("--weights", required=True, help="weights folder or checkpoint")
    parser.add_argument("--write", action="store_true", help="record T in the weights' card")
    args = parser.parse_args(argv)
    try:
        logits, labels, loaded = held_out_logits(args.weights, args.data)
        report = calibrate(logits, labels).to_dict()
    except VLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    if args.write:
        print(f"recorded in {record(loaded, report, args.data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
