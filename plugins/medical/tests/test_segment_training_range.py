"""The synthetic lesions' training ranges: nominal, `wide` and a share from the `wider` range
(the second fine-tune of the default segmenters), each drawn with the generator settings it
names; a share drawn from one generator with the `wide` set until its first wider volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from vlm_medical import synthetic
from vlm_medical.shifts import NOISE

SEED = 7_320_000  # the tests' own seed range (7,300,000 and up), no training or acceptance seed


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the generator is asked for, call by call (MONAI's 2D generator still draws)."""
    from monai.data import synthetic as monai_synthetic

    seen: list[dict[str, Any]] = []
    real = monai_synthetic.create_test_image_2d

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(monai_synthetic, "create_test_image_2d", spy)
    return seen


def test_each_range_asks_the_generator_for_its_own_noise_and_radii(monkeypatch) -> None:
    seen = _calls(monkeypatch)
    for kind in ({}, {"wide": True}, {"wider": True}):
        rng = np.random.RandomState(SEED)
        for _ in range(40):
            synthetic.make_image(rng, 128, **kind)
    nominal, wide, wider = seen[:40], seen[40:80], seen[80:]
    rad_min = [min(c["rad_min"] for c in part) for part in (nominal, wide, wider)]
    assert rad_min == [5, 3, 2]  # 128 // 24 = 5, then three quarters and half of it
    noise = [max(c["noise_max"] for c in part) for part in (nominal, wide, wider)]
    assert noise[0] <= NOISE[1] < noise[1] <= synthetic.WIDE_NOISE[1] < noise[2]
    assert noise[2] <= 2 * NOISE[1]  # the "noise" shift's level, reached but not passed
    with pytest.raises(ValueError, match="not both"):
        synthetic.make_image(np.random.RandomState(0), 64, wide=True, wider=True)


def test_a_wider_share_draws_the_volumes_its_picks_say(tmp_path: Path) -> None:
    wide = synthetic.write_dataset(tmp_path / "wide", 12, seed=SEED, dims=2, size=64, wide=True)
    mixed = synthetic.write_dataset(tmp_path / "mixed", 12, seed=SEED, dims=2, size=64,
                                    wide=True, wider=0.5)  # fmt: skip
    picks = np.random.RandomState(SEED + 1).uniform(size=12) < 0.5
    first = int(np.argmax(picks))
    assert first > 0 and 0 < picks.sum() < 12
    # one generator draws every volume, so the sets agree up to the first wider volume (after
    # it, MONAI's radius draws over another range have used the stream differently)
    for index in range(first + 1):
        name = f"imagesTr/synth_{SEED:04d}_{index:03d}.nii.gz"
        same = np.array_equal(nib.load(wide / name).get_fdata(), nib.load(mixed / name).get_fdata())
        assert same == (index < first), index
    assert "50% from the wider range" in (mixed / "dataset.json").read_text()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"wider": 1.5}, "between 0 and 1"), ({"wider": 0.5, "shift": "noise"}, "not a wider one")],
)
def test_a_bad_wider_share_is_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        synthetic.write_dataset(tmp_path / "set", 2, seed=SEED, dims=2, size=64, **kwargs)
    assert not (tmp_path / "set").exists()
