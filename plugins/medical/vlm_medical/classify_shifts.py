"""The named shifts of `vlm eval medical.classify --shift` and their seed ranges (light: no
numpy, so the task spec in :mod:`vlm_medical.classify_params` can declare them)."""

from __future__ import annotations

#: The training noise range: sigma of the Gaussian noise, drawn per volume, in the organ scale
#: (organs at 0.25-0.5 over a background of 0; :func:`vlm_medical.synthetic_classes.make_case`).
NOISE = (0.06, 0.12)
#: The training lesion radii in voxels at 32³ (inclusive).
RADII = (2, 4)

#: Named departures from the training distribution (`vlm eval medical.classify --shift NAME`),
#: in the generator's own terms. Each volume is drawn as in training first (the same lesion
#: contrast, 2.5-6 times the sigma drawn for it), then: "noise" adds its Gaussian noise at twice
#: the largest training sigma instead of the drawn one (a noisier scanner, the same anatomy);
#: "small" halves the lesions' radius range; "both" does both.
SHIFTS: dict[str, str] = {
    "none": "the training distribution (held-out seeds)",
    "noise": f"noise sigma {2 * NOISE[1]:g}, twice the largest training sigma; lesion "
    "contrast as drawn",
    "small": f"lesion radii halved: {RADII[0] // 2}-{RADII[1] // 2} voxels instead of "
    f"{RADII[0]}-{RADII[1]}",
    "both": "noise and small together",
}


def shift_settings(shift: str) -> dict[str, bool]:
    """``{"noisy": ..., "small": ...}`` for a name of :data:`SHIFTS`."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift '{shift}' (shifts: {', '.join(SHIFTS)})")
    return {"noisy": shift in ("noise", "both"), "small": shift in ("small", "both")}


#: The first held-out seed of the shifted evaluation data (acceptance figures, `vlm eval
#: --shift`): each shift draws its volumes from one generator seeded with it.
EVAL_SEED = 7_700_000
#: The first seed of the shifted validation volumes that choose checkpoints (one per shift:
#: ``VAL_SEED`` + the shift's index in :data:`SHIFTS`).
VAL_SEED = 7_710_000
#: The first seed of the tests' shifted volumes.
TEST_SEED = 7_720_000
