"""The named shifts of `vlm eval caption.describe --shift` and of
``benchmarks/shift_support.py`` (light: no numpy or torch, so the plugin's entry module can
declare them), and the seed ranges their held-out data come from."""

from __future__ import annotations

#: a photometric shift's exposure change, in stops: each photo is made one stop darker or one
#: stop brighter (half the photos each way, drawn per photo)
EXPOSURE_STOPS = 1.0
#: the Gaussian blur's standard deviation, pixels of the written photo
BLUR_SIGMA = 1.5
#: the JPEG quality the photo is compressed at
JPEG_QUALITY = 30
#: the side of the written photos: that of the bundled captioner's training photos (the
#: blur's sigma is in these pixels)
PHOTO_SIZE = 128

#: Named departures from the training photos, in the order `--shift all` measures them; the
#: photos are the generator's, the shift is applied to its pixels afterwards
#: (:func:`vlm_caption.shift_data.shifted_pixels`: exposure, then blur, then JPEG).
SHIFTS: dict[str, str] = {
    "none": "the training distribution (held-out seeds)",
    "exposure": f"±{EXPOSURE_STOPS:g} stop exposure (half the photos darker, half brighter)",
    "blur": f"Gaussian blur, sigma {BLUR_SIGMA:g} px",
    "jpeg": f"JPEG compression at quality {JPEG_QUALITY}",
    "photometric": "exposure, blur and JPEG together",
}

#: what each shift applies
PARTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "exposure": ("exposure",),
    "blur": ("blur",),
    "jpeg": ("jpeg",),
    "photometric": ("exposure", "blur", "jpeg"),
}

#: The first held-out data seed of the shifted photos and support cases: acceptance figures
#: (README, "Robustness under shift"). Validation (any choice a figure depends on) draws from
#: 7,510,000 on and the tests from 7,520,000 on. The generator's other seeds are 0-77, 1234,
#: 4321 and 7,100,000-7,100,001 (README, "Seeds").
EVAL_SEED = 7_500_000
VAL_SEED = 7_510_000
TEST_SEED = 7_520_000


def shift_parts(shift: str) -> tuple[str, ...]:
    """The operations of a shift of :data:`SHIFTS`, in the order they are applied."""
    if shift not in PARTS:
        raise ValueError(f"unknown shift '{shift}' (shifts: {', '.join(SHIFTS)})")
    return PARTS[shift]


#: the caption list the shift writer fills: held-out data, which `vlm eval` measures whole and
#: nothing trains on (:mod:`vlm_caption.train`)
HELD_OUT_FILE = "heldout.csv"
