"""medical.segment: accuracy of the default weights, geometry, measurements, bad inputs,
and training through the core trainer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import nibabel as nib
import numpy as np
import pytest
import torch
from vlm_medical.measure import dice_score, measure
from vlm_medical.synthetic import make_volume, write_dataset

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

VLM = [sys.executable, "-m", "vlm_core.cli"]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic volumes from seeds the default weights never saw."""
    return write_dataset(tmp_path_factory.mktemp("held-out"), 20, seed=1000, split="validation")


def run(inputs: list[Path], out: Path | None = None, **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest("medical.segment", [str(p) for p in inputs], dict(params), out_dir=out,
                         device="cpu")  # fmt: skip
    return run_task(request, registry=load_registry(), keep_results=True)


def test_our_dice_equals_monai_dice_metric() -> None:
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(0)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    for _ in range(10):
        pred = (rng.random((24, 24, 24)) > 0.6).astype(np.int64)
        target = (rng.random((24, 24, 24)) > 0.5).astype(np.int64)
        ours = dice_score(pred, target)
        theirs = metric(
            one_hot(torch.from_numpy(pred)[None, None], 2),
            one_hot(torch.from_numpy(target)[None, None], 2),
        )
        assert ours == pytest.approx(float(theirs), abs=1e-6)


@pytest.mark.parametrize("preset", ["auto", "ct-abdomen", "none"])
def test_inference_scaling_on_the_device_equals_the_training_scaling(preset: str) -> None:
    from vlm_medical.intensity import normalize, normalize_tensor

    volume = np.random.default_rng(1).normal(50, 300, (37, 29, 23)).astype(np.float32)
    ours = normalize_tensor(torch.from_numpy(volume), preset).numpy()
    np.testing.assert_allclose(ours, normalize(volume, preset), atol=1e-5)


def test_default_weights_reach_dice_090_on_20_held_out_volumes(held_out: Path) -> None:
    """Through `vlm eval` (the trainer's validation: sliding window, MONAI's compute_dice)."""
    from vlm_medical.segment import default_weights

    from vlm_core.training.api import evaluate_task

    result = evaluate_task("medical.segment", held_out, weights=default_weights(), device="cpu")
    assert result.samples == 20
    assert result.metrics["val_dice"] >= 0.90, result.metrics
    print(f"default weights on 20 held-out volumes: {result.metrics}")


def test_run_path_dice_on_held_out_volumes_matches_monai(held_out: Path) -> None:
    """Through `vlm run` (post-processing included): our Dice and MONAI's, volume by volume."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    manifest = json.loads((held_out / "dataset.json").read_text())["validation"][:6]
    images = [held_out / e["image"] for e in manifest]
    outcome = run(images)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    ours = []
    for entry, result in zip(manifest, outcome.results, strict=True):
        label = np.asarray(nib.load(held_out / entry["label"]).dataobj).astype(np.int64)
        pred = result.outputs["mask"].labels.astype(np.int64)
        ours.append(dice_score(pred, label))
        theirs = float(metric(one_hot(torch.from_numpy(pred)[None, None], 2),
                              one_hot(torch.from_numpy(label)[None, None], 2)))  # fmt: skip
        assert ours[-1] == pytest.approx(theirs, abs=1e-6)
    assert np.mean(ours) >= 0.90, ours


def test_nibabel_anatomical_keeps_its_geometry_and_is_measured(tmp_path: Path) -> None:
    from nibabel.testing import data_path

    source = Path(data_path) / "anatomical.nii"
    outcome = run([source], out=tmp_path / "out")
    (result,) = outcome.results
    img = nib.load(source)
    mask = result.outputs["mask"]
    assert mask.labels.shape == img.shape[:3]
    np.testing.assert_allclose(mask.affine, img.affine)
    written = nib.load(next((tmp_path / "out").rglob("mask.nii.gz")))
    np.testing.assert_allclose(written.affine, img.affine, atol=1e-5)
    np.testing.assert_allclose(
        written.header.get_zooms()[:3], img.header.get_zooms()[:3], atol=1e-5
    )
    assert "lesion_count" in result.outputs["measurements"].values


@pytest.mark.parametrize("orientation", ["native", "RAS"])
def test_reoriented_resampled_inference_returns_to_the_input_grid(
    tmp_path: Path, orientation: str
) -> None:
    image, label = make_volume(np.random.RandomState(7), 40)
    affine = np.diag([-0.8, 0.8, 1.5, 1.0])  # LAS: reorienting to RAS flips the first axis
    path = tmp_path / "aniso.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), path)
    (result,) = run([path], spacing_mm=1.0, orientation=orientation).results
    mask = result.outputs["mask"]
    assert mask.labels.shape == image.shape
    np.testing.assert_allclose(mask.affine, affine)
    assert dice_score(mask.labels, label) > 0.8  # the labels came back where the lesions are


def test_measurements_of_a_known_sphere() -> None:
    grid = np.indices((41, 41, 41)) - 20
    sphere = ((grid**2).sum(0) <= 10**2).astype(np.uint8)  # radius 10 voxels
    spacing = (0.5, 0.5, 2.0)
    summary, table = measure(sphere, spacing, ("background", "lesion"))
    assert summary["lesion_count"] == 1
    voxels = int(sphere.sum())
    assert summary["lesion_volume_ml"] == pytest.approx(voxels * 0.5 * 0.5 * 2.0 / 1000)
    lesion = table["lesion 1"]
    assert lesion["diameter_mm"] == pytest.approx(40.0, abs=0.1)  # 20 voxels along the 2 mm axis
    assert (lesion["bbox_min_i"], lesion["bbox_max_i"]) == (10, 30)


def test_a_2d_image_is_segmented_in_2d(tmp_path: Path) -> None:
    from PIL import Image

    image, _ = make_volume(np.random.RandomState(3), 64)
    plane = image[:, :, 32]
    scaled = ((plane - plane.min()) / (np.ptp(plane)) * 255).astype(np.uint8)
    Image.fromarray(scaled.T).save(tmp_path / "slice.png")
    (result,) = run([tmp_path / "slice.png"], out=tmp_path / "o").results
    assert result.outputs["mask"].labels.shape == scaled.T.shape


@pytest.mark.parametrize("case", ["huge header", "zip named nii.gz"])
def test_bad_volumes_fail_fast_on_one_line_and_write_nothing(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.nii.gz"
    if case == "huge header":
        header = nib.Nifti1Header()
        header.set_data_shape((10_000, 10_000, 10_000))
        header.set_data_dtype(np.uint8)
        path = tmp_path / "bad.nii"
        path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    else:
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.txt", "not a volume")
    out = tmp_path / "out"
    started = time.perf_counter()
    proc = subprocess.run([*VLM, "run", "medical.segment", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert (
        ("10000" in lines[0] or "voxels" in lines[0])
        if case == "huge header"
        else "ZIP" in lines[0]
    )
    assert (
        time.perf_counter() - started < 10
    )  # includes the interpreter start; the check is instant
    assert not out.exists()


def test_training_and_eval_through_the_core_trainer(
    tmp_path: Path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    data = write_dataset(tmp_path / "data", 4, seed=5, size=32)
    out = tmp_path / "run"
    proc = vlm_cli(
        "train", "medical.segment", "--data", str(data), "--steps", "2", "--batch-size", "2",
        "--out", str(out), "--param", "patch=32", "--param", "roi=32", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    sidecar = json.loads(next(out.glob("checkpoints/*/model.json")).read_text())
    assert sidecar["card"]["architecture"]["name"] == "unet"
    assert sidecar["card"]["class_names"] == ["background", "lesion"]
    assert {"val_dice", "val_hd95", "val_loss"} <= set(sidecar["metrics"])
    proc = vlm_cli(
        "eval", "medical.segment", "--data", str(data), "--weights", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["max_abs_diff"] < 1e-5
    shutil.rmtree(out)


def test_validation_volumes_of_any_side_are_windowed(
    tmp_path: Path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    """Validation volumes of side 20 (the UNet halves three times: 20 is no multiple of 8) and
    a window of 20: the validation loss and metrics come through the sliding window, whose
    side is rounded down to what the network takes, as the run path does."""
    data = write_dataset(tmp_path / "data", 4, seed=6, size=20)
    out = tmp_path / "run"
    proc = vlm_cli(
        "train", "medical.segment", "--data", str(data), "--steps", "1", "--batch-size", "2",
        "--out", str(out), "--param", "patch=16", "--param", "roi=20", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    sidecar = json.loads(next(out.glob("checkpoints/*/model.json")).read_text())
    assert {"val_dice", "val_loss"} <= set(sidecar["metrics"])
    assert sidecar["card"]["inference"]["roi"] == 16


def test_sliding_window_benchmark_compares_the_same_work() -> None:
    from vlm_medical.bench import bench_sliding_window

    row = bench_sliding_window(device="cpu", shape=(40, 40, 32), roi=32, sw_batch=2, rounds=1,
                               channels=(4, 8, 16))  # fmt: skip
    assert row["same_labels"] is True  # the plugin's labels equal raw MONAI's
    assert row["plugin_mvoxel_s"] > 0 and row["raw_mvoxel_s"] > 0


def test_swinunetr_trains_through_the_core_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attention-based network: one optimizer step, a validation on whole volumes, and
    the familiarity model of its bottleneck encoder fitted at the end."""
    from vlm_medical import networks
    from vlm_medical.params import SegmentTrainParams
    from vlm_medical.train import build

    from vlm_core.tasks import TrainContext
    from vlm_core.training import TrainConfig, Trainer

    # the real MONAI SwinUNETR, one block per stage, so that the test takes seconds
    monkeypatch.setitem(networks.DEFAULT_SWIN, "depths", [1, 1, 1, 1])
    data = write_dataset(tmp_path / "data", 3, seed=9, size=64)  # 2 to fit on, 1 to calibrate
    params = SegmentTrainParams(network="swinunetr", patch=64, roi=64, samples_per_volume=1)
    setup = build(data, params, TrainContext("medical.segment", "medical", "cpu", purpose="train"))
    assert type(setup.model).__name__ == "SwinUNETR"
    config = TrainConfig(max_steps=1, batch_size=1, device="cpu", tensorboard=False)
    result = Trainer(setup, config, tmp_path / "out").fit()
    assert result.status == "completed"
    assert {"val_dice", "val_hd95", "val_loss"} <= set(result.last_values)
    assert result.familiarity is not None and result.familiarity["fit_items"] == 2


def test_bad_weights_are_the_requests_fault_and_keep_the_plugin_enabled(
    tmp_path: Path, vlm_home: Path
) -> None:
    from vlm_core.config import read_user_config
    from vlm_core.errors import ParameterError

    image, _ = make_volume(np.random.RandomState(2), 32)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), path)
    for weights in (str(tmp_path / "missing"), str(tmp_path)):
        with pytest.raises(ParameterError, match="weights="):
            run([path], weights=weights)
    assert "medical" not in read_user_config().quarantined
