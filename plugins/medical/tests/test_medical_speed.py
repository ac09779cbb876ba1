"""The medical tasks' fast paths give what the slow ones gave: `medical.classify` explains a
batch in one Grad-CAM pass with the same probabilities, maps and familiarity rows as one
input at a time; the faster percentile, hole filling and label map equal what they replace;
the tasks' batch sizes; and the `vlm bench --pipeline` cases run on two inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from vlm_medical.synthetic_classes import make_case

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

#: data seed of these tests (the README's list of seeds: never trained or fitted on)
SEED = 4503


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    return vlm_home


def _volumes() -> list[np.ndarray]:
    """Lesion and normal 32³ volumes, a smaller anisotropic one and a one-slice 2D image."""
    rng = np.random.RandomState(SEED)
    out = [make_case(rng, lesion=i % 2 == 0)[0] for i in range(4)]
    out.append(make_case(rng, lesion=True, size=40)[0][:28, :36, :20])
    out.append(make_case(rng, lesion=True)[0][:, :, 16:17])
    return out


@pytest.mark.parametrize("explain", ["", "normal"])
def test_a_batch_is_explained_as_one_input_at_a_time(explain: str) -> None:
    from vlm_medical.classify import classify_array, classify_arrays, default_weights, load_model
    from vlm_medical.classify_params import ClassifyParams

    cpu = torch.device("cpu")
    model = load_model(default_weights(), cpu)
    params = ClassifyParams.model_validate({"explain": explain})
    volumes = _volumes()
    calls: list[int] = []
    handle = model.network.register_forward_hook(lambda *_: calls.append(1))
    tap = model.familiarity_tap()
    try:
        batched = classify_arrays(model, volumes, params, cpu, tap)
    finally:
        handle.remove()
    assert len(calls) == 1  # one forward pass for the whole batch
    assert tap is not None and len(tap.features()) == len(volumes)
    rows, verdicts = tap.features(), model.judge(tap, len(volumes))
    for volume, answer, row, verdict in zip(volumes, batched, rows, verdicts, strict=True):
        one = model.familiarity_tap()
        probs, explained, heat, scaled = classify_array(model, volume, params, cpu, one)
        np.testing.assert_allclose(answer.probs, probs, rtol=1e-5, atol=1e-7)
        assert answer.explained == explained
        if explain:
            assert model.class_names[explained] == explain
        assert answer.heat.shape == volume.shape and heat.max() == 1.0
        np.testing.assert_allclose(answer.heat, heat, atol=1e-4)
        np.testing.assert_array_equal(answer.scaled, scaled)
        assert one is not None
        torch.testing.assert_close(row[None], one.features(), rtol=1e-4, atol=1e-6)
        (alone,) = model.judge(one)
        assert verdict is not None and alone is not None
        assert verdict["flagged"] == alone["flagged"]
        assert verdict["score"] == pytest.approx(alone["score"], abs=1.01e-4)  # 4 decimals


def test_the_run_calls_the_network_once_per_batch(tmp_path: Path) -> None:
    import nibabel as nib
    from vlm_medical.classify import default_weights, load_model

    files = []
    for i, volume in enumerate(_volumes()[:5]):
        files.append(tmp_path / f"case-{i}.nii.gz")
        nib.save(nib.Nifti1Image(volume, np.eye(4)), files[-1])
    network = load_model(default_weights(), torch.device("cpu")).network  # the cached module
    calls: list[int] = []
    handle = network.register_forward_hook(lambda _m, args, _o: calls.append(len(args[0])))
    try:
        results = {}
        for size in (2, 1):
            request = RunRequest("medical.classify", [str(p) for p in files], batch_size=size,
                                 device="cpu")  # fmt: skip
            outcome = run_task(request, registry=load_registry(), keep_results=True)
            results[size] = outcome.results
            if size == 2:
                assert calls == [2, 2, 1]
    finally:
        handle.remove()
    for a, b in zip(results[2], results[1], strict=True):
        pa, pb = a.outputs["probabilities"].values, b.outputs["probabilities"].values
        assert pa == pytest.approx(pb, rel=1e-5, abs=1e-7)
        assert a.outputs["heatmap"].array.dtype == np.uint8
        diff = a.outputs["heatmap"].array.astype(int) - b.outputs["heatmap"].array
        assert np.abs(diff).max() <= 1  # 8-bit maps: a rounding step at most
        assert (a.ood is None) == (b.ood is None)
        if a.ood is not None:
            assert a.ood["flagged"] == b.ood["flagged"]


def test_the_tasks_batch_sizes() -> None:
    tasks = load_registry().tasks
    assert tasks["medical.classify"].batch_size == 8
    assert tasks["medical.segment"].batch_size == 1
    assert tasks["medical.classify"].resolve_bench() is not None
    assert tasks["medical.segment"].resolve_bench() is not None


@pytest.mark.parametrize("n", [1, 2, 7, 200, 32**3])
def test_the_percentile_is_numpys(n: int) -> None:
    from vlm_medical.intensity import _percentile

    rng = np.random.default_rng(n)
    values = rng.normal(0, 100, n).astype(np.float32)
    values[: n // 3] = values[0]  # ties
    for q in (0.0, 0.5, 13.0, 50.0, 87.5, 99.5, 100.0):
        ours = float(_percentile(torch.from_numpy(values), q))
        assert ours == pytest.approx(float(np.percentile(values, q)), rel=1e-6, abs=1e-4), q


@pytest.mark.parametrize("dims", [2, 3])
def test_hole_filling_is_monais(dims: int) -> None:
    from monai.transforms import FillHoles
    from scipy import ndimage
    from vlm_medical.measure import fill_label_holes

    rng = np.random.RandomState(SEED + dims)
    for trial in range(4):
        shape = (40,) * dims
        blobs = ndimage.gaussian_filter(rng.rand(*shape), 3) > 0.5
        labels = blobs.astype(np.uint8)
        inner = ndimage.binary_erosion(blobs, iterations=2)
        labels[inner & (rng.rand(*shape) < 0.05)] = 0  # enclosed holes
        labels[0, ...] = np.where(rng.rand(*shape[1:]) < 0.1, 0, labels[0, ...])  # open ones
        if trial % 2:  # a second label, which can enclose the first's holes or not
            labels[(rng.rand(*shape) < 0.2) & blobs] = 2
        values = [int(v) for v in np.unique(labels) if v]
        theirs = np.asarray(FillHoles(applied_labels=values)(torch.as_tensor(labels.copy()[None])))
        ours = fill_label_holes(labels, values)
        np.testing.assert_array_equal(ours, theirs[0])
        if trial == 0:
            assert (ours != labels).sum() > 0  # there were holes to fill


def test_labels_are_the_argmax() -> None:
    from vlm_medical.segment import labels_of

    logits = torch.randn(2, 3, 9, 8, 7)
    logits[:, 2] = logits[:, 0]  # ties: the first class wins, as with argmax
    np.testing.assert_array_equal(labels_of(logits), logits.argmax(dim=1).to(torch.uint8))
    two = torch.randn(1, 2, 16, 16, 16)
    np.testing.assert_array_equal(labels_of(two), two.argmax(dim=1).to(torch.uint8))


@pytest.mark.parametrize("task", ["medical.classify", "medical.segment"])
def test_the_pipeline_bench_case_runs_on_two_inputs(task: str, tmp_path: Path) -> None:
    from vlm_medical.classify import CLASSIFIER
    from vlm_medical.segment import SEGMENTERS

    from vlm_core.params import validate_params
    from vlm_core.weights import load_model

    spec = load_registry().tasks[task]
    case = spec.resolve_bench()
    folder = tmp_path / "inputs"
    folder.mkdir()
    case.make_inputs(folder, 2, 0)
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == ["case-00000.nii.gz", "case-00001.nii.gz"]
    assert case.note
    params = validate_params(spec, dict(case.params))
    passes: list[int] = []
    model = case.model_only(files, params, 2, "cpu")
    recipe = CLASSIFIER if task == "medical.classify" else SEGMENTERS[3]
    network = load_model("", recipe).module  # the cached network the case runs
    handle = network.register_forward_hook(lambda _m, args, _o: passes.append(len(args[0])))
    try:
        model()
    finally:
        handle.remove()
    # classify: one Grad-CAM pass over both; segment: one window per 64³ volume, one by one
    assert passes == ([2] if task == "medical.classify" else [1, 1])
