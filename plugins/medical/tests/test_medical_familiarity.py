"""Knowing its limits: every medical result says whether its input looks unlike what the
network learned (``ood``), from features the network computes anyway.

Held-out in-domain inputs here come from test seeds (4500-4502) that neither trained the
weights (0), fitted their familiarity models (2000, 2100, 2200), chose their layers or
temperature (3000, 3100, 3200) nor feed the benchmark's acceptance figures (4000, 4100, 4200).
The real inputs are files pydicom, nibabel and scikit-image ship.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import nibabel as nib
import numpy as np
import pytest
from vlm_medical.synthetic import make_volume, write_dataset
from vlm_medical.synthetic_classes import make_case, write_class_dataset

from vlm_core.bench.familiarity import dicom_files, nifti_files, photographs
from vlm_core.familiarity import FAMILIARITY_FILE, Familiarity
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.weights.hashing import sha256_of

TEST_SEEDS = {"segment-3d": 4500, "segment-2d": 4501, "classify": 4502}


def run(task: str, inputs: list[Path], **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest(task, [str(p) for p in inputs], dict(params), device="cpu")
    return run_task(request, registry=load_registry(), keep_results=True)


def real(name: str) -> Path:
    found = {p.name: p for p in [*dicom_files(), *nifti_files(), *photographs()]}
    if name not in found:
        pytest.skip(f"{name} is not installed here")
    return found[name]


def bundled(folder: str) -> Path:
    from vlm_core.tasks import package_file

    return Path(package_file("vlm_medical", "weights", folder))


def assert_verdict(ood: object, weights: Path) -> None:
    """An ``ood`` of the documented shape whose threshold is the weights' own."""
    assert isinstance(ood, dict) and set(ood) == {"flagged", "score", "threshold"}
    assert isinstance(ood["flagged"], bool)
    assert isinstance(ood["score"], float) and isinstance(ood["threshold"], float)
    assert ood["flagged"] == (ood["score"] > ood["threshold"])
    fitted = Familiarity.load(weights / FAMILIARITY_FILE)
    assert ood["threshold"] == pytest.approx(fitted.threshold, abs=1e-4)


# --- the bundled weights carry their familiarity model ---------------------------------------


@pytest.mark.parametrize("folder", ["segment-unet3d", "segment-unet2d", "classify-densenet"])
def test_bundled_weights_ship_a_familiarity_file_their_card_names(folder: str) -> None:
    weights = bundled(folder)
    sidecar = json.loads((weights / "model.json").read_text())
    assert sidecar["files"][FAMILIARITY_FILE] == sha256_of(weights / FAMILIARITY_FILE)
    assert (weights / FAMILIARITY_FILE).stat().st_size <= 2 * 2**20
    fitted = Familiarity.load(weights / FAMILIARITY_FILE)
    assert fitted.method == "knn" and fitted.info["fit_items"] >= 200
    # the layers the run taps are the ones it was fitted on, recorded in the card
    assert sidecar["card"]["features"]["layers"]
    assert sidecar["familiarity"]["threshold"] == pytest.approx(fitted.threshold, abs=1e-5)


# --- medical.segment ----------------------------------------------------------------------------


def test_segment_3d_flags_a_real_mr_volume_not_held_out_synthetic_ones(tmp_path: Path) -> None:
    rng = np.random.RandomState(TEST_SEEDS["segment-3d"])
    files = []
    for i in range(2):
        image, _ = make_volume(rng)
        files.append(tmp_path / f"held_{i}.nii.gz")
        nib.save(nib.Nifti1Image(image, np.eye(4)), files[-1])
    outcome = run("medical.segment", [*files, real("anatomical.nii")])
    *held, mr = outcome.results
    for result in outcome.results:
        assert_verdict(result.ood, bundled("segment-unet3d"))
    assert not any(r.ood["flagged"] for r in held)  # about 2.5% of in-domain inputs are
    assert mr.ood["flagged"] and mr.ood["score"] > 2 * mr.ood["threshold"]


def test_segment_2d_flags_a_ct_slice_and_a_retina_photo_not_held_out_images(tmp_path: Path) -> None:
    """The issue's CT_small ('6 lesions') and scikit-image's retinal photograph crop, through
    the 2D UNet."""
    data = write_dataset(tmp_path / "held", 4, seed=TEST_SEEDS["segment-2d"], dims=2)
    held_files = sorted((data / "imagesTr").glob("*.nii.gz"))
    outcome = run(
        "medical.segment", [*held_files, real("CT_small.dcm"), real("microaneurysms.png")]
    )
    *held, ct, retina = outcome.results
    for result in outcome.results:
        assert_verdict(result.ood, bundled("segment-unet2d"))
    assert sum(r.ood["flagged"] for r in held) <= 1
    assert ct.ood["flagged"] and retina.ood["flagged"]


def test_segment_run_records_the_verdict_in_result_json(tmp_path: Path) -> None:
    request = RunRequest("medical.segment", [str(real("MR_small.dcm"))], {},
                         out_dir=tmp_path / "out", device="cpu")  # fmt: skip
    outcome = run_task(request, registry=load_registry(), keep_results=True)
    (written,) = (tmp_path / "out").rglob("result.json")
    assert json.loads(written.read_text())["ood"] == outcome.results[0].ood
    assert outcome.results[0].ood["flagged"]


def test_fit_features_equal_the_runs_features(tmp_path: Path) -> None:
    """`vlm train` fits on exactly what a run taps: the same file through the training
    transforms and window_features, and through the run's loader and segment_array."""
    import torch
    from vlm_medical.params import SegmentParams, SegmentTrainParams
    from vlm_medical.segment import (
        _as_volume,
        default_weights,
        load_model,
        segment_array,
        window_features,
    )
    from vlm_medical.train import _transforms

    from vlm_core.familiarity import FeatureTap
    from vlm_core.io import load_input, probe_input
    from vlm_core.kinds import Kind

    data = write_dataset(tmp_path / "one", 1, seed=TEST_SEEDS["segment-2d"], dims=2)
    image = next((data / "imagesTr").iterdir())
    model = load_model(default_weights(2), torch.device("cpu"), 2)
    params = SegmentParams.model_validate({})
    item = _transforms(SegmentTrainParams.model_validate({"spatial_dims": 2}), False)(
        {"image": str(image), "label": str(data / "labelsTr" / image.name)}
    )
    fitted = window_features(model.network, model.layers, item["image"][None], params)
    array, affine, flat = _as_volume(load_input(probe_input(image, (Kind.VOLUME, Kind.IMAGE))))
    tap = FeatureTap(model.network, model.layers)
    segment_array(model, array, affine, params, torch.device("cpu"), flat, tap=tap)
    assert len(tap.features()) == 9  # a 128² image is 3 x 3 windows of 64²
    torch.testing.assert_close(fitted, tap.mean(), rtol=1e-5, atol=1e-6)


# --- medical.classify ---------------------------------------------------------------------------


def test_classify_flags_the_cameraman_and_an_mr_slice_not_held_out_volumes(
    tmp_path: Path,
) -> None:
    """The issue's 'lesion 1.000' inputs are flagged; held-out synthetic volumes are not."""
    data = write_class_dataset(tmp_path / "held", 2, seed=TEST_SEEDS["classify"], split="val")
    held_files = sorted((data / "val").rglob("*.nii.gz"))
    outcome = run("medical.classify", [*held_files, real("camera.png"), real("MR_small.dcm")])
    *held, camera, mr = outcome.results
    for result in outcome.results:
        assert_verdict(result.ood, bundled("classify-densenet"))
    assert sum(r.ood["flagged"] for r in held) <= 1
    assert camera.ood["flagged"] and mr.ood["flagged"]


def test_classify_taps_the_grad_cam_forward_pass_once(tmp_path: Path) -> None:
    """One forward pass per input (Grad-CAM's; its backward pass runs no forward hooks), and
    the tap's verdict is that pass's row: the probabilities are the temperature-scaled softmax
    of the same logits."""
    import torch
    from vlm_medical.classify import (
        classify_array,
        default_weights,
        load_model,
        prepare,
    )
    from vlm_medical.classify_params import ClassifyParams

    model = load_model(default_weights(), torch.device("cpu"))
    image, _ = make_case(np.random.RandomState(TEST_SEEDS["classify"]), lesion=True)
    calls: list[int] = []
    handle = model.network.register_forward_hook(lambda *_: calls.append(1))
    tap = model.familiarity_tap()
    assert tap is not None
    try:
        probs, *_ = classify_array(model, image, ClassifyParams.model_validate({}),
                                   torch.device("cpu"), tap)  # fmt: skip
    finally:
        handle.remove()
    assert len(calls) == 1 and len(tap.features()) == 1
    (verdict,) = model.judge(tap)
    assert verdict is not None
    with torch.inference_mode():
        logits = model.network(prepare(torch.from_numpy(image), model.preset, model.size)[None])
    assert model.temperature != 1.0  # the bundled card records a fitted temperature
    expected = (logits[0].double() / model.temperature).softmax(0).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-4)


def test_strict_refuses_a_photograph_with_exit_2(
    tmp_path: Path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    done = vlm_cli("run", "medical.classify", str(real("camera.png")), "--strict",
                   "--out", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "camera.png looks unlike medical.classify's training data" in done.stderr
    assert not list((tmp_path / "out").rglob("result.json"))


# --- weights without a familiarity file ------------------------------------------------------


def test_weights_without_a_familiarity_file_give_ood_none(tmp_path: Path) -> None:
    """Weights that carry no familiarity model (a hub checkpoint, weights trained before vlm
    fitted one) answer with ``ood = None`` and hook nothing."""
    weights = tmp_path / "weights"
    shutil.copytree(bundled("classify-densenet"), weights)
    (weights / FAMILIARITY_FILE).unlink()
    # the very same tensors: the core's model cache must not hand back the bundled weights'
    # familiarity model with the network it shares
    sidecar = json.loads((weights / "model.json").read_text())
    del sidecar["files"][FAMILIARITY_FILE]
    sidecar.pop("familiarity", None)
    (weights / "model.json").write_text(json.dumps(sidecar))
    bundled_run, copy_run = (
        run("medical.classify", [real("camera.png")], weights=str(w)).results[0]
        for w in (bundled("classify-densenet"), weights)
    )
    assert bundled_run.ood is not None and bundled_run.ood["flagged"]
    result = copy_run
    assert result.ood is None
    assert result.outputs["class"].text in ("lesion", "normal")  # it still answers


# --- fitting: --fit-ood-only and vlm train ---------------------------------------------------


def test_fit_ood_only_gives_the_bundled_segment_weights_a_familiarity_file(
    tmp_path: Path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    """purpose='fit' builds the network as its card records it (2D here) and fits on whole
    images; the tensors are the weights' own."""
    from vlm_core.weights.trained import load_trained

    data = write_dataset(tmp_path / "data", 6, seed=TEST_SEEDS["segment-2d"], size=64, dims=2)
    out = tmp_path / "fitted"
    done = vlm_cli("train", "medical.segment", "--data", str(data), "--fit-ood-only",
                   "--weights", str(bundled("segment-unet2d")), "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    mine, theirs = load_trained(str(out)), load_trained(str(bundled("segment-unet2d")))
    assert mine is not None and theirs is not None
    assert mine.sidecar["card"]["architecture"]["spatial_dims"] == 2
    for name, tensor in theirs.state_dict.items():
        assert np.array_equal(np.asarray(mine.state_dict[name]), np.asarray(tensor)), name
    fitted = Familiarity.load(mine.path.parent / FAMILIARITY_FILE)
    assert fitted.info["fit_items"] == 5 and fitted.info["calibration_items"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("task", ["medical.segment", "medical.classify"])
def test_a_tiny_user_trained_checkpoint_comes_with_its_familiarity_and_flags_a_photo(
    task: str, tmp_path: Path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    """`vlm train` with the task's tiny settings ends by fitting the checkpoint's own
    familiarity model, and a run with those weights flags a real photograph."""
    spec = load_registry().tasks[task]
    tiny = spec.tiny
    assert tiny is not None and tiny.train_data is not None
    data = tiny.resolve_train_data()(tmp_path / "data", **tiny.train_data_args) or (
        tmp_path / "data"
    )
    out = tmp_path / "run"
    args = [f"--param={k}={v}" for k, v in tiny.train_params.items()]
    args += [f"--set={k}={v}" for k, v in tiny.train_config.items() if k != "batch_size"]
    done = vlm_cli("train", task, "--data", str(data), "--out", str(out), "--batch-size",
                   str(tiny.train_config.get("batch_size", 2)), *args)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "familiarity: fitted on" in done.stdout
    (familiarity,) = out.rglob(FAMILIARITY_FILE)
    sidecar = json.loads((familiarity.parent / "model.json").read_text())
    assert sidecar["files"][FAMILIARITY_FILE] == sha256_of(familiarity)
    (result,) = run(task, [real("camera.png")], weights=str(out)).results
    assert result.ood is not None and result.ood["flagged"]
