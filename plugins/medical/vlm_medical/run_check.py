"""`vlm run medical.segment` scored like `vlm eval`: the mean Dice of the run's masks (its
post-processing included) against the labels of a Decathlon-style folder, so that a test and
a benchmark can show that a run at its defaults measures what the evaluation measures."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_dice(data: Path, out: Path, store: Any = None, **params: object) -> tuple[float, int]:
    """``(mean Dice, images)`` of a run over ``data``'s validation images with ``params``
    (none: the run's defaults), its results written under ``out``."""
    import json

    import nibabel as nib
    import numpy as np

    from vlm_core.runner import RunRequest, run_task
    from vlm_medical.measure import dice_score

    listed = json.loads((data / "dataset.json").read_text())["validation"]
    pairs = [(data / e["image"], data / e["label"]) for e in listed]
    request = RunRequest("medical.segment", [str(image) for image, _ in pairs], dict(params),
                         out_dir=out, device="cpu", previews=False)  # fmt: skip
    run_task(request, store=store, keep_results=False)
    scores = []
    for image, label in pairs:
        truth = np.asarray(nib.load(label).dataobj).astype(np.uint8)
        mask = nib.load(out / image.name.removesuffix(".nii.gz") / "mask.nii.gz")
        scores.append(dice_score(np.asarray(mask.dataobj).astype(np.uint8).reshape(truth.shape),
                                 truth))  # fmt: skip
    return float(np.mean(scores)), len(scores)
