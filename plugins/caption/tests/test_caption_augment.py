"""`vlm train caption.describe -p augment=photometric`: the training photos are drawn afresh
under random exposure, blur and JPEG at strengths that cover the named shifts and go past them,
some stay as generated; validation and evaluation photos are never augmented; the familiarity
model is fitted on photos drawn like the training ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (imported at collection: the captioner's image tower)
import torch
import torchvision.transforms.v2  # noqa: F401  (imported at collection, not in the first test)
from vlm_caption.augment import EXPOSURE_STOPS, augmented, photometric
from vlm_caption.params import CaptionTrainParams
from vlm_caption.products import render_photo, write_dataset
from vlm_caption.shifts import EXPOSURE_STOPS as SHIFT_STOPS
from vlm_caption.shifts import TEST_SEED
from vlm_caption.train import build

from vlm_core.tasks import TrainContext

TASK = "caption.describe"


def test_the_augmentation_covers_the_shifts_and_keeps_some_photos_as_they_are() -> None:
    assert EXPOSURE_STOPS > SHIFT_STOPS
    pixels = render_photo(64, TEST_SEED * 1_000_003 + 40).pixels
    image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    torch.manual_seed(0)
    ratios, clean = [], 0
    for _ in range(300):
        out = photometric(image)
        assert out.shape == image.shape and out.dtype == torch.uint8
        clean += int(torch.equal(out, image))
        ratios.append(out.float().mean().item() / image.float().mean().item())
    assert 0.1 < clean / 300 < 0.45  # a share as generated, most changed
    assert min(ratios) < 2**-SHIFT_STOPS < 1 < 1.5 < max(ratios)  # a stop either way, and more
    assert len({round(r, 3) for r in ratios}) > 100  # drawn afresh, not a few fixed variants


def test_an_unknown_augment_is_refused_and_none_is_the_transform_itself() -> None:
    def transform(x: object) -> object:
        return x

    assert augmented(transform, "none") is transform
    with pytest.raises(ValueError, match="unknown augment"):
        augmented(transform, "geometric")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("augdata")
    write_dataset(folder, 8, size=32, seed=TEST_SEED % 1000)
    return folder


def _build(data: Path, purpose: str, augment: str = "photometric"):
    params = CaptionTrainParams(image_size=32, width=32, depth=1, heads=2, augment=augment,
                                val_fraction=0.25)  # fmt: skip
    return build(data, params, TrainContext(task=TASK, plugin="caption", device="cpu",
                                            purpose=purpose, seed=0))  # fmt: skip


def _differs(dataset, index: int = 0, reads: int = 6) -> bool:
    first = dataset[index]["image"]
    return any(not torch.equal(first, dataset[index]["image"]) for _ in range(reads))


def test_training_photos_are_augmented_and_validation_photos_are_not(data: Path) -> None:
    torch.manual_seed(1)
    setup = _build(data, "train")
    assert _differs(setup.train_data) and _differs(setup.fit_data)
    assert setup.val_data is not None and not _differs(setup.val_data)
    plain = _build(data, "train", augment="none")
    assert not _differs(plain.train_data) and not _differs(plain.fit_data)
    # fitting the familiarity model alone calibrates it on photos drawn like its fit data
    fit = _build(data, "fit")
    assert fit.val_data is not None and _differs(fit.val_data)


def test_evaluation_never_augments(data: Path) -> None:
    setup = _build(data, "eval")
    assert not _differs(setup.val_data) and not _differs(setup.fit_data)
    assert np.isfinite(setup.val_data[0]["image"].numpy()).all()


def test_calibration_photos_can_be_drawn_under_the_training_augmentation() -> None:
    """`python -m vlm_caption.calibration --augment photometric`: the same photos and labels,
    their pixels under a draw of the augmentation seeded by the data seed (the same on every
    call, some photos changed), and the global torch generator left where it was."""
    from vlm_caption.calibration import photos

    clean = photos(12, TEST_SEED + 3)
    torch.manual_seed(5)
    before = torch.rand(())
    torch.manual_seed(5)
    first = photos(12, TEST_SEED + 3, "photometric")
    assert torch.rand(()) == before  # the caller's random stream is untouched
    second = photos(12, TEST_SEED + 3, "photometric")
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(first, second, strict=True))
    changed = [not np.array_equal(a.pixels, c.pixels) for a, c in zip(first, clean, strict=True)]
    assert any(changed)  # drawn: a quarter stay as generated, so not necessarily all
    for a, c in zip(first, clean, strict=True):
        assert a.pixels.shape == c.pixels.shape and a.pixels.dtype == np.uint8
        assert (a.product, a.colour, a.defect) == (c.product, c.colour, c.defect)
    with pytest.raises(ValueError, match="unknown augment"):
        photos(2, TEST_SEED, "sepia")
