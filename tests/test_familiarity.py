"""Knowing its limits (issue 20): the familiarity engine, its file beside the weights, the
verdict on every result, the CLI warning and ``--strict`` refusal, fitting at the end of
``vlm train`` and with ``--fit-ood-only``, and temperature scaling.

The trainable fixture task ``good.shapes`` (tests/fixtures/plugins/vlm-fixture-good) is a
small CNN telling circles, squares and triangles apart on dark 32x32 images; its run takes
features with a :class:`FeatureTap` from the forward pass it makes anyway. Photographs are
scikit-image's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import cli
from PIL import Image as PILImage

from vlm_core.familiarity import (
    FAMILIARITY_FILE,
    Familiarity,
    FamiliarityError,
    FeatureTap,
    fit_familiarity,
    ood_warning,
)
from vlm_core.familiarity.calibration import calibrate
from vlm_core.runstore import RunStore

# -- the engine ---------------------------------------------------------------------------


def _cloud(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Items of a 32-dimensional in-domain distribution (a correlated Gaussian around a
    centre), ``shift`` moving them off it."""
    mix = np.linspace(0.2, 1.0, 32)
    return rng.normal(size=(n, 32)) * mix + 3.0 + shift * rng.normal(size=(1, 32))


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_the_threshold_flags_about_its_target_share_of_new_in_domain_items(method: str) -> None:
    """Over five fits (one threshold is a noisy 97.5th percentile of 200-300 scores), new
    in-domain items are flagged at about the 2.5% target, shifted ones nearly always."""
    rates = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        model = fit_familiarity(_cloud(rng, 400), _cloud(rng, 200), method=method)  # type: ignore[arg-type]
        fresh = _cloud(np.random.default_rng(100 + seed), 2000)  # neither fit nor calibration
        rates.append(float((model.scores(fresh) > model.threshold).mean()))
        shifted = _cloud(np.random.default_rng(200 + seed), 300, shift=3.0)
        assert [v["flagged"] for v in model.judge(shifted)].count(True) >= 0.95 * 300
    assert 0.01 <= float(np.mean(rates)) <= 0.045, rates
    assert model.info["fit_items"] == 400 and model.info["calibration_items"] == 200


def test_a_familiarity_file_round_trips_and_is_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    model = fit_familiarity(_cloud(rng, 100), _cloud(rng, 40), info={"seed": 3})
    path = model.save(tmp_path / FAMILIARITY_FILE)
    back = Familiarity.load(path)
    probe = _cloud(rng, 20, shift=1.0)
    assert back.threshold == model.threshold and back.info["seed"] == 3
    np.testing.assert_allclose(back.scores(probe), model.scores(probe), atol=2e-3)  # fp16 bank
    with pytest.raises(FamiliarityError, match="sha256 mismatch"):
        Familiarity.load(path, sha256="0" * 64)
    with pytest.raises(FamiliarityError, match="fitted on 32"):
        back.scores(np.ones((2, 8)))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(FamiliarityError, match="cannot read"):
        Familiarity.load(tmp_path / "junk.safetensors")
    with pytest.raises(FamiliarityError, match="at least 2"):
        fit_familiarity(np.ones((1, 4)))


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_scores_are_the_distances_the_methods_define_for_tensors_and_arrays(method: str) -> None:
    """Tensors (scored on their device; here the CPU, the only device this machine has) and
    arrays get the scores a brute-force numpy computation of each method's distance gives."""
    rng = np.random.default_rng(0)
    model = fit_familiarity(_cloud(rng, 300), _cloud(rng, 50), method=method)  # type: ignore[arg-type]
    probe = _cloud(rng, 40, shift=1.0).astype(np.float32)
    unit = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    if method == "knn":
        bank = model.tensors["bank"]
        distances = np.linalg.norm(unit[:, None, :] - bank[None, :, :], axis=2)
        expected = np.sort(distances, axis=1)[:, model.k - 1]
    else:
        d = unit - model.tensors["mean"]
        expected = np.sqrt(np.einsum("nd,de,ne->n", d, model.tensors["precision"], d))
    np.testing.assert_allclose(model.scores(probe), expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.scores(torch.from_numpy(probe)), expected, rtol=1e-3,
                               atol=1e-4)  # fmt: skip


def test_the_tap_pools_the_layer_the_forward_pass_runs_and_leaves_no_hook() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    x = torch.randn(3, 3, 9, 9)
    with FeatureTap(net, "1") as tap:
        net(x)
        net(x[:1])
    expected = net[1](net[0](x)).mean((2, 3))
    torch.testing.assert_close(tap.features()[:3], expected)
    assert tap.features().shape == (4, 4) and tap.mean().shape == (1, 4)
    assert not net[1]._forward_hooks
    with FeatureTap(net, ["1", "2"]) as both:
        net(x)
    assert both.features().shape == (3, 6)
    with pytest.raises(FamiliarityError, match="no layer 'head'"), FeatureTap(net, "head"):
        pass


def test_temperature_scaling_makes_overconfident_scores_honest() -> None:
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(2000, 4, generator=gen) * 2
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=gen)[:, 0]
    report = calibrate(true_logits * 3, labels)  # three times too sure of itself
    assert 2.4 < report.temperature < 3.6
    assert report.ece_after < report.ece_before / 3 and report.ece_after < 0.05
    assert report.nll_after < report.nll_before and report.samples == 2000
    binary = torch.randn(2000, generator=gen) * 2
    hits = (torch.rand(2000, generator=gen) < binary.sigmoid()).long()
    assert calibrate(binary * 4, hits).ece_after < calibrate(binary * 4, hits).ece_before


# -- fitting with training, and a task's runs ---------------------------------------------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory, fixture_site: Path) -> dict[str, Any]:
    """A trained shapes classifier (with its familiarity model), held-out shapes of another
    seed, and photographs."""
    import sys

    sys.path.insert(0, str(fixture_site))
    from vlm_fixture_good.plugin import ShapesTrainParams
    from vlm_fixture_good.shapes import build, make_shapes

    from vlm_core.bench.familiarity import photographs
    from vlm_core.tasks import TrainContext
    from vlm_core.training import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("familiarity")
    data = make_shapes(root / "train", per_class=40, seed=1)
    torch.manual_seed(0)
    ctx = TrainContext(task="good.shapes", plugin="good", device="cpu", seed=0)
    setup = build(data, ShapesTrainParams(), ctx)
    config = TrainConfig(max_steps=60, batch_size=16, lr=3e-3, device="cpu", log_every=10,
                         tensorboard=False)  # fmt: skip
    out = root / "run"
    result = Trainer(setup, config, out, sidecar={"task": "good.shapes", "plugin": "good"}).fit()
    held = make_shapes(root / "held", per_class=10, seed=77)
    photos = [p for p in photographs() if p.suffix == ".png"][:12]
    return {"out": out, "result": result, "data": data, "held": sorted(held.rglob("*.png")),
            "photos": photos}  # fmt: skip


def test_training_ends_by_fitting_the_best_checkpoints_familiarity(shapes: dict) -> None:
    from vlm_core.training import checkpoint as ckpt

    out = shapes["out"]
    summary = shapes["result"].familiarity
    assert summary is not None and summary["method"] == "knn"
    best = out / ckpt.CHECKPOINTS / ckpt.read_pointer(out)["best"]
    sidecar = json.loads((best / "model.json").read_text())
    assert FAMILIARITY_FILE in sidecar["files"] and sidecar["familiarity"] == summary
    ckpt.verify(best)  # its sha256 is the one the sidecar records
    assert summary["fit_items"] == 90 and summary["calibration_items"] == 30
    assert summary["command"] is None and summary["seed"] == 0
    report = json.loads((out / "report.json").read_text())
    assert report["familiarity"] == summary


def test_a_run_says_which_inputs_look_unlike_the_training_data(
    shapes: dict, vlm_home: Path, fixture_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlm_core.bench.familiarity import task_scores

    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("VLM_PLUGINS", "good")
    params = {"weights": str(shapes["out"])}
    held = task_scores("good.shapes", shapes["held"], params=params)
    photos = task_scores("good.shapes", shapes["photos"], params=params)
    assert all(o is not None and set(o) == {"flagged", "score", "threshold"} for o in held)
    assert sum(o["flagged"] for o in held) <= 2  # of 30 held-out shapes  # type: ignore[index]
    assert all(o["flagged"] for o in photos), photos  # type: ignore[index]
    # bundled weights without a familiarity file: no verdict, said as null
    assert task_scores("good.shapes", shapes["held"][:1]) == [None]


def _two_inputs(shapes: dict, tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    shape = folder / "a-shape.png"
    photo = folder / "b-photo.png"
    shape.write_bytes(shapes["held"][0].read_bytes())
    PILImage.open(shapes["photos"][0]).convert("RGB").save(photo)
    return [shape, photo]


@pytest.fixture
def good(vlm_home: Path, fixture_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("VLM_PLUGINS", "good")
    from vlm_core.plugins import get_registry

    get_registry(reload=True)
    return vlm_home


def test_the_cli_warns_once_per_flagged_input_and_the_json_carries_every_verdict(
    shapes: dict, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shape, photo = _two_inputs(shapes, tmp_path)
    argv = ["run", "good.shapes", str(shape), str(photo), "-p", f"weights={shapes['out']}"]
    code, stdout, stderr = cli([*argv, "--json", "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    results = json.loads(stdout)["results"]
    assert [r["ood"]["flagged"] for r in results] == [False, True]
    warning = ood_warning("b-photo.png", "good.shapes", results[1]["ood"])
    assert stderr.splitlines() == [f"warning: {warning}"]
    assert "looks unlike good.shapes's training data (score" in warning
    on_disk = json.loads((tmp_path / "o" / "b-photo" / "result.json").read_text())
    assert on_disk["ood"] == results[1]["ood"]
    record = RunStore.default().list(limit=1)[0]
    assert [(Path(e["input"]).name, e["ood"]["flagged"]) for e in record.provenance["ood"]] == [
        ("a-shape.png", False),
        ("b-photo.png", True),
    ]
    code, shown, _ = cli(["runs", "show", record.id], capsys)
    assert code == 0 and f"unfamiliar: {warning}" in shown.splitlines()


def test_strict_refuses_flagged_inputs_and_writes_nothing_for_them(
    shapes: dict, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shape, photo = _two_inputs(shapes, tmp_path)
    weights = f"weights={shapes['out']}"
    out = tmp_path / "o"
    argv = ["run", "good.shapes", str(shape), str(photo), "-p", weights, "--strict", "--out"]
    code, stdout, stderr = cli([*argv, str(out)], capsys)
    assert code == 2
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a-shape"]
    assert len(stderr.splitlines()) == 1 and stderr.startswith(f"error: {photo} looks unlike")
    assert stderr.rstrip().endswith("refused in strict mode")
    assert "1 result(s), 1 input(s) refused (--strict)" in stdout
    record = RunStore.default().list(limit=1)[0]
    assert record.status == "partial" and record.provenance["refused"][0]["input"] == str(photo)
    code, shown, _ = cli(["runs", "show", record.id], capsys)
    assert [x for x in shown.splitlines() if x.startswith("refused: ")] == [
        f"refused: {stderr.strip().removeprefix('error: ')}"
    ]
    # every input refused: one line, exit 2, no output folder at all
    alone = tmp_path / "alone"
    code, _, stderr = cli(["run", "good.shapes", str(photo), "-p", weights, "--strict", "--out",
                           str(alone)], capsys)  # fmt: skip
    assert code == 2 and not alone.exists()
    assert len(stderr.strip().splitlines()) == 1 and "refused in strict mode" in stderr
    assert RunStore.default().list(limit=1)[0].status == "rejected"


def test_fit_ood_only_gives_other_weights_a_familiarity_model_that_ships_with_them(
    shapes: dict, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fixture's bundled weights have no familiarity file (their runs say null); fitted
    on the user's data they come with one, and shipping copies it with its sha256."""
    from vlm_core.tasks import package_file
    from vlm_core.weights.trained import ship_trained

    bundled = package_file("vlm_fixture_good", "weights", "shapes")
    out = tmp_path / "fitted"
    fit = ["train", "good.shapes", "--data", str(shapes["data"]), "--weights", str(bundled)]
    code, stdout, err = cli([*fit, "--fit-ood-only", "--out", str(out)], capsys)
    assert code == 0, err
    assert stdout.startswith("familiarity: fitted on 90 items")
    assert f"--param weights={out}" in stdout
    code, _, err = cli([*fit, "--fit-ood-only", "--out", str(out)], capsys)
    assert code == 2 and "already holds trained weights" in err
    shipped = tmp_path / "shipped"
    model_file, _ = ship_trained(out, shipped)
    sidecar = json.loads((shipped / "model.json").read_text())
    assert set(sidecar["files"]) == {"model.safetensors", FAMILIARITY_FILE}
    shape, photo = _two_inputs(shapes, tmp_path)
    code, stdout, _ = cli(["run", "good.shapes", str(shape), str(photo), "-p",
                           f"weights={model_file}", "--json"], capsys)  # fmt: skip
    assert [r["ood"]["flagged"] for r in json.loads(stdout)["results"]] == [False, True]
    # the same tensors without the familiarity model, in the same process: no verdict
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(shipped, bare)
    (bare / FAMILIARITY_FILE).unlink()
    sidecar["files"].pop(FAMILIARITY_FILE)
    (bare / "model.json").write_text(json.dumps(sidecar))
    code, stdout, _ = cli(["run", "good.shapes", str(photo), "-p",
                           f"weights={bare / 'model.safetensors'}", "--json"], capsys)  # fmt: skip
    assert code == 0 and json.loads(stdout)["results"][0]["ood"] is None
    (shipped / FAMILIARITY_FILE).write_bytes(b"tampered")
    from vlm_core.runtime.cache import model_cache

    model_cache().clear()  # as a new process: the file is read with the weights
    code, _, err = cli(["run", "good.shapes", str(shape), "-p", f"weights={model_file}"], capsys)
    assert code == 2 and "sha256 mismatch" in err and len(err.strip().splitlines()) == 1, err


def test_eval_reports_how_many_validation_samples_the_familiarity_model_flags(
    shapes: dict, good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "good.shapes", "--data", str(shapes["data"]), "--weights", str(shapes["out"])]
    code, stdout, _ = cli(argv, capsys)
    assert code == 0
    line = next(x for x in stdout.splitlines() if x.startswith("familiarity: "))
    assert "of 30 validation samples" in line and line.endswith(", knn)")
    code, stdout, _ = cli([*argv, "--json"], capsys)
    found = json.loads(stdout)["familiarity"]
    # the split that calibrated the threshold: about 2.5% of it, and never most of it
    assert found["samples"] == 30 and found["flagged"] <= 3 and found["method"] == "knn"


def test_training_on_too_few_items_to_fit_ends_saved_without_a_familiarity_model(
    shapes: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from torch.utils.data import Subset
    from vlm_fixture_good.plugin import ShapesTrainParams
    from vlm_fixture_good.shapes import build

    from vlm_core.tasks import TrainContext
    from vlm_core.training import TrainConfig, Trainer, find_checkpoint

    setup = build(shapes["data"], ShapesTrainParams(), TrainContext("good.shapes", "good", "cpu"))
    setup.fit_data = Subset(setup.train_data, [0])
    setup.val_data = None
    config = TrainConfig(max_steps=2, batch_size=4, device="cpu", tensorboard=False)
    result = Trainer(setup, config, tmp_path / "run").fit()
    assert result.status == "completed" and result.familiarity is None
    found = find_checkpoint(tmp_path / "run")
    assert found is not None and FAMILIARITY_FILE not in found.sidecar["files"]
    assert "no familiarity model fitted" in caplog.text and "at least 2" in caplog.text


def test_fit_ood_only_on_too_little_data_says_so_and_leaves_nothing(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlm_fixture_good.shapes import make_shapes

    from vlm_core.tasks import package_file

    data = make_shapes(tmp_path / "two", per_class=1, seed=5)
    (data / "square" / "0000.png").unlink()  # two images: one to fit on, one to calibrate
    bundled = package_file("vlm_fixture_good", "weights", "shapes")
    out = tmp_path / "fitted"
    code, _, err = cli(["train", "good.shapes", "--data", str(data), "--weights", str(bundled),
                        "--fit-ood-only", "--out", str(out)], capsys)  # fmt: skip
    assert code == 2 and not out.exists()
    assert err.startswith(f"error: cannot fit a familiarity model on {data}: ")
    assert "at least 2 in-domain items, got 1" in err and len(err.strip().splitlines()) == 1
