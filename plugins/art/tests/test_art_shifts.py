"""Issue 21 for the art plugin: `vlm eval --shift` of art.generate and art.style_transfer
(the data each writer draws, per-style accuracy by the judge network), and, per trainable task,
that `vlm run` at its defaults and `vlm eval` measure the same thing on the same data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from vlm_art.shift_data import per_style_counts, write_generate_set, write_transfer_set
from vlm_art.shifts import GENERATE_SHIFTS, SAMPLING_FILE, TEST_SEED, TRANSFER_SHIFTS
from vlm_art.styles import STYLES

from vlm_core.plugins import get_registry, load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.tasks import shifts_problems

VLM = [sys.executable, "-m", "vlm_core.cli"]


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    """A private VLM_HOME (the vlm pytest plugin's), as in test_art.py."""
    return vlm_home


def run(task: str, inputs: list[Path] | None = None, **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest(task, [str(p) for p in inputs or []], dict(params), device="cpu")
    return run_task(request, registry=load_registry(), keep_results=True)


class _Size:
    image_size = 16
    val_size = 64


def test_both_tasks_declare_valid_shifts_from_their_own_seed_range() -> None:
    registry = get_registry()
    for task, names in (("art.generate", GENERATE_SHIFTS), ("art.style_transfer", TRANSFER_SHIFTS)):
        spec = registry.task(task)
        assert shifts_problems(spec) == [], task
        assert spec.shifts is not None and list(spec.shifts.names) == list(names)
        assert 7_600_000 <= spec.shifts.seed < 7_610_000  # acceptance range, below validation's
    assert registry.task("art.generate").shifts.count == 500 * len(STYLES)  # type: ignore[union-attr]


def test_generate_set_is_balanced_held_out_and_says_how_to_sample(tmp_path: Path) -> None:
    assert per_style_counts(7, 5) == [2, 2, 1, 1, 1] and sum(per_style_counts(2500, 5)) == 2500
    folder = write_generate_set(tmp_path / "a", shift="truncation-05", count=7, seed=TEST_SEED,
                                params=_Size())  # fmt: skip
    counts = {s: len(list((folder / "val" / s).glob("*.png"))) for s in STYLES}
    assert sorted(counts.values(), reverse=True) == [2, 2, 1, 1, 1]
    sampling = json.loads((folder / SAMPLING_FILE).read_text())
    assert sampling == {"seed": TEST_SEED, "truncation": 0.5, "shift": "truncation-05"}
    # another seed draws other images (the training data's seed 0 is not this one)
    other = write_generate_set(tmp_path / "b", shift="none", count=5, seed=0, params=_Size())
    first = (folder / "val" / "circles" / "0000.png").read_bytes()
    assert first != (other / "val" / "circles" / "0000.png").read_bytes()


def test_transfer_shifts_start_from_the_same_crops_and_change_them(tmp_path: Path) -> None:
    from PIL import Image

    def pixels(shift: str) -> np.ndarray:
        folder = write_transfer_set(tmp_path / shift, shift=shift, count=2, seed=TEST_SEED,
                                    params=_Size())  # fmt: skip
        files = sorted((folder / "val").glob("*.png"))
        assert len(files) == 2
        return np.stack([np.asarray(Image.open(f), np.float64) for f in files])

    none = pixels("none")
    assert none.shape == (2, 64, 64, 3) and not np.array_equal(none[0], none[1])
    dark, noise = pixels("dark"), pixels("noise")
    # 1.5 stops darker: linear light x 0.354, about x 0.65 in sRGB values
    assert 0.55 < dark.mean() / none.mean() < 0.7
    assert 10 < np.abs(noise - none).mean() < 25  # sigma 20/255, clipped at the ends
    for smooth in ("blur", "lowres"):  # detail gone, the picture kept
        found = pixels(smooth)
        assert np.abs(np.diff(found, axis=2)).mean() < 0.8 * np.abs(np.diff(none, axis=2)).mean()
        assert abs(found.mean() - none.mean()) < 3


def test_an_unknown_shift_is_one_line_exit_2() -> None:
    done = subprocess.run([*VLM, "eval", "art.style_transfer", "--shift", "darkk"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "did you mean 'dark'" in done.stderr


def _reduced(pixels: np.ndarray, side: int) -> torch.Tensor:
    """A run's uint8 image (H, W, 3), enlarged by `upscale`, back at the generator's ``side``
    by averaging: (3, side, side) in [0, 1]."""
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].double() / 255
    return torch.nn.functional.adaptive_avg_pool2d(x, side)[0].float()


@pytest.mark.slow
def test_generate_run_at_its_defaults_measures_what_eval_does(tmp_path: Path) -> None:
    """`vlm eval art.generate` on a shift folder judges the images `vlm run art.generate`
    makes at its defaults (no truncation) for ``styles=S, count=n, seed=SEED+k``. At the
    generator's own size (``upscale=1``) the run's images are the eval's to a uint8 level: the
    same per-style accuracies and FID by the eval's own metric code. The default ``upscale=4``
    only enlarges them for viewing (Lanczos), which the judge, reducing them back, mostly
    agrees with: per-style accuracy within one image of a style (FID moves: README)."""
    from vlm_art import classifier
    from vlm_art.data import read_folder
    from vlm_art.train import GANQuality, _InFolderOrder

    from vlm_core.training.api import evaluate_task

    per_style = 12
    folder = write_generate_set(tmp_path / "set", shift="none", count=per_style * len(STYLES),
                                seed=TEST_SEED, params=None)  # fmt: skip
    evaluated = evaluate_task("art.generate", folder, device="cpu").metrics
    real = read_folder(folder / "val", 32)
    names, labels = real.class_names, torch.from_numpy(real.labels)
    assert labels.tolist() == [k for k in range(len(names)) for _ in range(per_style)]

    def measured(**params: object) -> dict[str, float]:
        fakes = []
        for k, style in enumerate(names):
            made = run("art.generate", styles=style, count=per_style, seed=TEST_SEED + k,
                       **params)  # fmt: skip
            fakes += [_reduced(i.pixels, 32) for i in made.results[0].outputs["images"].images]
        metric = GANQuality(_InFolderOrder(classifier.load(fresh=True), names), labelled=True,
                            class_names=names)  # fmt: skip
        metric.update(torch.stack(fakes), ((torch.from_numpy(real.images) + 1) / 2, labels))
        return {k: float(v) for k, v in metric.compute().items()}

    native, default = measured(upscale=1), measured()
    for style in names:
        key = f"style_acc_{style}"
        assert native[key] == pytest.approx(evaluated[f"val_{key}"], abs=1e-6), style
        assert abs(default[key] - evaluated[f"val_{key}"]) <= 1 / per_style + 1e-6, style
    # FID is continuous: other latents (a run that drew differently) would move it by far more
    # than the run's uint8 rounding does
    assert native["fid"] == pytest.approx(evaluated["val_fid"], rel=0.01)


@pytest.mark.slow
def test_style_transfer_run_at_its_defaults_measures_what_eval_does(tmp_path: Path) -> None:
    """`vlm eval art.style_transfer` of the bundled 'painting' network on a shift folder gives
    the content and style losses that the eval's own loss code gives on the images `vlm run
    art.style_transfer` makes of the same files at its defaults (size 256: the eval's 256 px
    squares, as the card's training parameters set ``val_size``)."""
    from vlm_art import style_images
    from vlm_art.optimize import StyleTransfer
    from vlm_art.tensors import to_tensor
    from vlm_art.train_transfer import PerceptualLoss, judged_styles

    from vlm_core.training.api import evaluate_task, recorded_params

    spec = get_registry().task("art.style_transfer")
    _, _, _, trained = recorded_params(spec, None, {})
    assert trained.val_size == 256  # the run's default size: the eval's squares go through whole
    folder = write_transfer_set(tmp_path / "set", shift="dark", count=3, seed=TEST_SEED,
                                params=trained)  # fmt: skip
    files = sorted((folder / "val").glob("*.png"))
    evaluated = evaluate_task("art.style_transfer", folder, device="cpu").metrics
    made = run("art.style_transfer", files)
    outputs = torch.stack([to_tensor(r.outputs["stylised"].pixels)[0] for r in made.results])
    assert outputs.shape == (3, 3, 256, 256)
    from PIL import Image

    contents = torch.stack([to_tensor(np.asarray(Image.open(f).convert("RGB")))[0]
                            for f in files])  # fmt: skip
    style = style_images.choose(trained.style)
    loss = PerceptualLoss(
        StyleTransfer(trained.backbone, trained.backbone_weights, seed=trained.backbone_seed),
        to_tensor(style_images.pixels(style, trained.style_size)),
        content_weight=trained.content_weight, style_weight=trained.style_weight,
    )  # fmt: skip
    with torch.no_grad():
        content, style_loss = loss.losses(outputs, contents)
    assert abs(float(content.mean()) - evaluated["val_content"]) <= 0.01 * evaluated["val_content"]
    assert abs(float(style_loss.mean()) - evaluated["val_style"]) <= 0.02 * evaluated["val_style"]
    # a procedural style's network: the judge's share of its outputs called that style
    circles = str(Path(spec.weights[2].filename).parent)
    assert "circles" in circles
    judged = evaluate_task("art.style_transfer", folder, weights=circles, device="cpu").metrics
    runs = run("art.style_transfer", files, style="circles")
    from vlm_art import classifier

    stylised = torch.stack([to_tensor(r.outputs["stylised"].pixels)[0] for r in runs.results])
    share = float((judged_styles(classifier.load(), stylised) == STYLES.index("circles")).float()
                  .mean())  # fmt: skip
    assert share == pytest.approx(judged["val_style_judged"], abs=1 / 3 + 1e-6)
