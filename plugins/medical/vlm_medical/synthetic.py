"""Synthetic lesion volumes and images from MONAI's generators, written as a Decathlon-style
data set.

Each volume (or 2D image) holds several spherical (circular) blobs, the "lesions", of random
size and brightness in noise, with a random intensity gain, offset and smooth bias field, so
that a model must learn shape and contrast rather than one grey level. Labels are 0
(background) and 1 (lesion).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vlm_medical.shifts import NOISE, shift_settings

SIZE = 64

#: The default weights' training range since issue 21 (``wide=True``): noise up to 0.75 (the
#: nominal :data:`NOISE` stops at 0.5, the "noise" shift draws 1.0) and lesion radii down to
#: three quarters of the nominal smallest (the "small" shift halves them).
WIDE_NOISE = (NOISE[0], 0.75)
WIDE_RADIUS = 0.75
#: The widest range (``wider=True``, a share of the volumes of a second fine-tune): noise up to
#: the "noise" shift's 1.0 and radii down to the "small" shift's half of the nominal smallest,
#: so the shifted rows of `vlm eval --shift` lie inside it (their draws are fixed at the edge:
#: noise 1.0 for every volume, radii halved at both ends).
WIDER_NOISE = (NOISE[0], 2 * NOISE[1])
WIDER_RADIUS = 0.5


def _scanner(image: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """``image`` (values 0..1, any dimension) as a scanner might give it: a smooth linear bias
    field, then a random gain and offset; float32."""
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in image.shape), indexing="ij"))
    bias = 1.0 + 0.3 * np.tensordot(rng.uniform(-1, 1, image.ndim), grid, axes=1)
    gain, offset = rng.uniform(50, 400), rng.uniform(-200, 200)
    return (image * bias * gain + offset).astype(np.float32)


def _blobs(
    rng: np.random.RandomState,
    size: int,
    dims: int,
    rad_max: int,
    rad_min: int,
    *,
    noisy: bool = False,
    small: bool = False,
    wide: bool = False,
    wider: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """MONAI's test image of ``dims`` dimensions with 3-8 blobs, through :func:`_scanner`;
    ``noisy``/``small``: the "noise" and "small" shifts of :data:`SHIFTS`; ``wide``: the
    wider training range (:data:`WIDE_NOISE`, radii down to :data:`WIDE_RADIUS` of the
    smallest), which still stops short of every shift; ``wider``: the widest
    (:data:`WIDER_NOISE`, :data:`WIDER_RADIUS`), which reaches them."""
    if wide and wider:
        raise ValueError("draw from the wide range or the wider one, not both")
    noise_range = WIDER_NOISE if wider else WIDE_NOISE if wide else NOISE
    if wide or wider:
        rad_min = max(1, int(rad_min * (WIDER_RADIUS if wider else WIDE_RADIUS)))
    from monai.data.synthetic import create_test_image_2d, create_test_image_3d

    create: Callable[..., tuple[np.ndarray, np.ndarray]] = (
        create_test_image_3d if dims == 3 else create_test_image_2d
    )
    image, label = create(
        *(size,) * dims,
        num_objs=int(rng.randint(3, 9)),
        rad_max=max(2, rad_max // 2) if small else rad_max,
        rad_min=max(1, rad_min // 2) if small else rad_min,
        noise_max=2 * NOISE[1] if noisy else float(rng.uniform(*noise_range)),
        num_seg_classes=1,
        random_state=rng,
    )
    return _scanner(image, rng), (label > 0).astype(np.uint8)


def make_volume(
    rng: np.random.RandomState, size: int = SIZE, shift: str = "none", wide: bool = False,
    wider: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One ``(image, label)`` pair: float32 image and uint8 label of shape ``(size,)*3``,
    drawn from the nominal (or ``wide``, or ``wider``) training range or under a ``shift`` of
    :data:`SHIFTS`."""
    return _blobs(rng, size, 3, rad_max=max(4, size // 6), rad_min=max(2, size // 16),
                  wide=wide, wider=wider, **shift_settings(shift))  # fmt: skip


def make_image(
    rng: np.random.RandomState, size: int = 128, shift: str = "none", wide: bool = False,
    wider: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One 2D ``(image, label)`` pair of shape ``(size, size)``, as :func:`make_volume` in 2D."""
    return _blobs(rng, size, 2, rad_max=max(5, size // 8), rad_min=max(3, size // 24),
                  wide=wide, wider=wider, **shift_settings(shift))  # fmt: skip


def write_dataset(
    folder: Path,
    n: int,
    *,
    seed: int = 0,
    size: int | None = None,
    split: str = "training",
    spacing: float = 1.0,
    dims: int = 3,
    shift: str = "none",
    wide: bool = False,
    wider: float = 0.0,
) -> Path:
    """Write ``n`` volumes (``dims=2``: 2D images, ``size`` 128 unless given) as NIfTI under
    ``folder/imagesTr`` and ``folder/labelsTr`` with a ``dataset.json`` listing them under
    ``split`` ("training" or "validation"), drawn under ``shift`` (:data:`SHIFTS`), or from
    the ``wide`` training range; ``wider``: the share of them drawn from the widest range
    instead (which volumes: a second generator seeded ``seed + 1``)."""
    if (wide or wider) and shift != "none":
        raise ValueError("a shift is drawn from the nominal range, not a wider one")
    if not 0.0 <= wider <= 1.0:
        raise ValueError(f"wider is a share between 0 and 1, not {wider}")
    shift_settings(shift)  # an unknown name fails before anything is written
    import nibabel as nib

    size = size or (SIZE if dims == 3 else 128)
    rng = np.random.RandomState(seed)
    picks = np.random.RandomState(seed + 1).uniform(size=n) < wider
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    entries = []
    for i in range(n):
        widest = bool(picks[i])
        image, label = (make_volume if dims == 3 else make_image)(
            rng, size, shift, wide and not widest, widest
        )
        name = f"synth_{seed:04d}_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), folder / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), folder / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    manifest = {
        "name": "vlm synthetic lesions",
        "description": f"MONAI create_test_image_{dims}d blobs, seed {seed}, shift {shift}"
        + (", wide training range" if wide else "")
        + (f", {wider:.0%} from the wider range" if wider else ""),
        "modality": {"0": "synthetic"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": n if split == "training" else 0,
        "training": entries if split == "training" else [],
        "validation": entries if split == "validation" else [],
    }
    (folder / "dataset.json").write_text(json.dumps(manifest, indent=2))
    return folder
