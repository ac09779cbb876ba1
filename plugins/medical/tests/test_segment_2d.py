"""medical.segment in 2D: the bundled 2D UNet on held-out synthetic images, PNG input through
it, a 2D network on a volume slice by slice, and 2D training through the core trainer."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from vlm_medical.measure import dice_score
from vlm_medical.synthetic import make_image, make_volume, write_dataset

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

VLM = [sys.executable, "-m", "vlm_core.cli"]


@pytest.fixture(scope="module")
def held_out_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic 2D images from seeds the 2D weights never saw."""
    folder = tmp_path_factory.mktemp("held-out-2d")
    return write_dataset(folder, 20, seed=1000, split="validation", dims=2)


def run(inputs: list[Path], **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest("medical.segment", [str(p) for p in inputs], dict(params), device="cpu")
    return run_task(request, registry=load_registry(), keep_results=True)


def test_default_2d_weights_reach_dice_090_on_20_held_out_images(held_out_2d: Path) -> None:
    """Through `vlm eval`: the network is rebuilt as its card records it (2D)."""
    from vlm_medical.segment import default_weights

    from vlm_core.training.api import evaluate_task

    weights = default_weights(2)
    result = evaluate_task("medical.segment", held_out_2d, weights=weights, device="cpu")
    assert result.samples == 20
    assert result.metrics["val_dice"] >= 0.90, result.metrics
    print(f"default 2D weights on 20 held-out images: {result.metrics}")


def test_a_png_slice_goes_through_the_2d_network(tmp_path: Path) -> None:
    """A PNG (an 8-bit export of a held-out image) is segmented by the bundled 2D UNet, not the
    3D one, and the mask finds the lesions."""
    from vlm_medical.segment import default_weights

    from vlm_core.weights.trained import load_trained

    image, label = make_image(np.random.RandomState(4242), 128)
    scaled = ((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
    Image.fromarray(scaled.T).save(tmp_path / "slice.png")  # rows are j, columns i
    (result,) = run([tmp_path / "slice.png"]).results
    mask = result.outputs["mask"].labels
    assert mask.shape == scaled.T.shape
    assert result.provenance.weights_sha256 == {
        "segment-2d": load_trained(default_weights(2)).sha256
    }
    assert dice_score(mask.T.astype(np.int64), label.astype(np.int64)) >= 0.85


def test_a_2d_network_segments_a_volume_slice_by_slice(tmp_path: Path) -> None:
    """`weights=` a 2D model on a 3D volume: every slice k is an image of one batch, and the
    labels equal those of each slice segmented on its own (a CT window, so that the intensity
    scaling does not depend on what else is in the volume); the mask keeps the volume's grid
    and affine through a run."""
    import torch
    from vlm_medical.params import SegmentParams
    from vlm_medical.segment import default_weights, load_model, segment_array

    image, _ = make_volume(np.random.RandomState(77), 48)
    model = load_model(default_weights(2), torch.device("cpu"), 2)
    params = SegmentParams(preset="ct-abdomen", roi=32, overlap=0.5)
    cpu = torch.device("cpu")
    whole = segment_array(model, image, np.eye(4), params, cpu, flat=False)
    one_by_one = np.concatenate(
        [segment_array(model, image[:, :, k : k + 1], np.eye(4), params, cpu, flat=True)
         for k in range(image.shape[2])], axis=2,
    )  # fmt: skip
    assert whole.shape == image.shape and whole.any()
    assert np.mean(whole == one_by_one) > 0.999
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "vol.nii.gz")
    (result,) = run([tmp_path / "vol.nii.gz"], weights=default_weights(2)).results
    assert result.outputs["mask"].labels.shape == (48, 48, 48)
    np.testing.assert_allclose(result.outputs["mask"].affine, affine)


def test_2d_training_and_eval_through_the_core_trainer(
    tmp_path: Path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    data = write_dataset(tmp_path / "data", 4, seed=5, size=64, dims=2)
    out = tmp_path / "run"
    proc = vlm_cli(
        "train", "medical.segment", "--data", str(data), "--steps", "2", "--batch-size", "2",
        "--out", str(out), "--param", "spatial_dims=2", "--param", "patch=32", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    sidecar = json.loads(next(out.glob("checkpoints/*/model.json")).read_text())
    assert sidecar["card"]["architecture"]["spatial_dims"] == 2
    assert {"val_dice", "val_hd95"} <= set(sidecar["metrics"])
    proc = vlm_cli(
        "eval", "medical.segment", "--data", str(data), "--weights", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_data_of_the_other_dimension_is_refused_on_one_line(
    tmp_path: Path, dims: int, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    data = write_dataset(tmp_path / "data", 2, seed=6, size=32, dims=5 - dims)
    proc = vlm_cli(
        "train", "medical.segment", "--data", str(data), "--steps", "1",
        "--param", f"spatial_dims={dims}", "--param", "patch=32", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"a {5 - dims}D image, and spatial_dims={dims} trains a {dims}D network" in lines[0]


def test_png_images_and_labels_train_a_2d_network(tmp_path: Path) -> None:
    """images/ and labels/ folders of PNG files (RGB photos, label values = class indices)."""
    from vlm_medical.params import SegmentTrainParams
    from vlm_medical.train import build

    from vlm_core.tasks import TrainContext
    from vlm_core.training import TrainConfig, Trainer

    for folder in ("images", "labels"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    rng = np.random.RandomState(11)
    for n in range(3):
        image, label = make_image(rng, 64)
        grey = ((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "data/images" / f"{n}.png")
        Image.fromarray(label).save(tmp_path / "data/labels" / f"{n}.png")
    params = SegmentTrainParams(spatial_dims=2, patch=32, roi=64, val_fraction=0.34)
    setup = build(tmp_path / "data", params, TrainContext("medical.segment", "medical", "cpu"))
    sample = setup.train_data[0][0]
    assert sample["image"].shape == (1, 32, 32) and sample["label"].shape == (1, 32, 32)
    assert set(np.unique(np.asarray(sample["label"]))) <= {0, 1}
    config = TrainConfig(max_steps=2, batch_size=2, device="cpu", tensorboard=False)
    result = Trainer(setup, config, tmp_path / "out").fit()
    assert result.status == "completed" and "val_dice" in result.last_values
