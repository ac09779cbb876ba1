"""The named shifts of `vlm eval medical.segment --shift` (light: no numpy, so the plugin's
entry module can declare them)."""

from __future__ import annotations

#: The generator's noise range (``noise_max`` of MONAI's generator, drawn per image).
NOISE = (0.2, 0.5)

#: Named departures from the training distribution (`vlm eval medical.segment --shift NAME`),
#: in the generator's own terms: "noise" draws every image at twice the largest training
#: noise; "small" halves every lesion's radius range (down to half the smallest training
#: radius); "both" does both.
SHIFTS: dict[str, str] = {
    "none": "the training distribution (held-out seeds)",
    "noise": f"noise at {2 * NOISE[1]:g}, twice the largest training noise",
    "small": "lesion radii halved: from half the smallest to half the largest training radius",
    "both": "noise and small together",
}


def shift_settings(shift: str) -> dict[str, bool]:
    """``{"noisy": ..., "small": ...}`` for a name of :data:`SHIFTS`."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift '{shift}' (shifts: {', '.join(SHIFTS)})")
    return {"noisy": shift in ("noise", "both"), "small": shift in ("small", "both")}


#: The first held-out seed of the shifted evaluation data (acceptance figures). Shifted
#: validation volumes (choosing checkpoints) come from 7,100,000 on, tests' from 7,300,000 on.
EVAL_SEED = 7_200_000
