"""`vlm export medical.segment` and `medical.classify`: the UNets (3D, and 2D from 2D weights)
and the DenseNet as ONNX and .pt2 with their parity check (held-out generated data: output
differences, mean Dice and accuracy of both), runs of the exported files giving the torch
weights' files, and the refusals (corrupt files, Grad-CAM choices: one line, exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm_core.deploy.export import PARITY_SEED, Exported, export_task
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.tasks import package_file
from vlm_core.testing.exports import check_corrupt_exports_refused, corrupt_onnx_export

pytest.importorskip("onnxruntime")

SEGMENT, CLASSIFY = "medical.segment", "medical.classify"
WEIGHTS_2D = str(package_file("vlm_medical", "weights", "segment-unet2d"))
VOLUME = package_file("vlm_medical", "samples", "synthetic-lesions.nii.gz")
CUBE = package_file("vlm_medical", "samples", "synthetic-lesion-32.nii.gz")
TOLERANCE = {"onnx": 1e-4, "pt2": 1e-5}


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    """A private VLM_HOME: runs and the run store stay out of the user's own."""
    return vlm_home


def _export(out: Path, task: str, fmt: str, weights: str = "", count: int = 8) -> Exported:
    """``export_task`` with the registry of a private VLM_HOME (module fixtures run outside the
    per-test one)."""
    with pytest.MonkeyPatch.context() as patch:
        home = out.parent / "vlm-home"
        home.mkdir(exist_ok=True)
        patch.setenv("VLM_HOME", str(home))
        return export_task(
            task, out=out, weights=weights, fmt=fmt, count=count, registry=load_registry()
        )


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Exported]]:
    """``exports(task, fmt, weights="")``: the export, made once per module (10-25 s each on
    the 2-core CPU)."""
    folder = tmp_path_factory.mktemp("medical-exports")
    made: dict[tuple[str, str, str], Exported] = {}

    def get(task: str, fmt: str, weights: str = "") -> Exported:
        key = (task, fmt, weights)
        if key not in made:
            name = f"{task.split('.')[1]}-{fmt}-{len(made)}"
            made[key] = _export(folder / name, task, fmt, weights)
        return made[key]

    yield get
    shutil.rmtree(folder, ignore_errors=True)


def run(task: str, inputs: list[Path], out: Path | None = None, **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest(task, [str(p) for p in inputs], dict(params), out_dir=out, device="cpu")
    return run_task(request, registry=load_registry(), keep_results=True)


def _files(out: Path) -> dict[str, bytes]:
    """The files one input's results wrote under a run folder, by name (result.json, which
    records the weights' sha256 and the familiarity verdict, left out)."""
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "result.json"}


# --- light, fast -------------------------------------------------------------------------------


def test_the_specs_stay_light_and_are_registered() -> None:
    code = (
        "import sys, vlm_medical.plugin, vlm_medical.deploy as d\n"
        "d.segment_spec(); d.classify_spec()\n"
        "print(*(m in sys.modules for m in ('torch', 'monai', 'vlm_medical.prune',"
        " 'vlm_medical.distill')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False"] * 4, proc.stdout
    tasks = load_registry().tasks
    assert tasks[SEGMENT].deploy == "vlm_medical.deploy:segment_spec"
    assert tasks[CLASSIFY].deploy == "vlm_medical.deploy:classify_spec"


def test_window_axes_follow_the_loaded_network() -> None:
    from vlm_medical.deploy import segment_spec, unet_stride
    from vlm_medical.params import SegmentParams

    assert unet_stride({"name": "unet", "strides": [2, 2, 2]}) == 8
    assert unet_stride({"name": "unet", "strides": [2, 2]}) == 4
    assert unet_stride({"name": "swinunetr"}) == 32
    spec = segment_spec()
    (window,) = spec.input_specs(spec.load("", SegmentParams()))
    assert {i: a.name for i, a in window.dynamic.items()} == {0: "batch", 2: "i", 3: "j", 4: "k"}
    assert all(window.dynamic[i].multiple == 8 and window.dynamic[i].min == 16 for i in (2, 3, 4))


def test_loading_2d_weights_gives_2d_windows() -> None:
    from vlm_medical.deploy import segment_spec
    from vlm_medical.params import SegmentParams

    spec = segment_spec()
    loaded = spec.load(WEIGHTS_2D, SegmentParams())
    assert sorted(spec.input_specs(loaded)[0].dynamic) == [0, 2, 3]
    assert loaded.recipe.name == "segment"  # the recipe a run with -p weights=... loads with
    (example,) = spec.example(loaded)
    assert example.shape == (2, 1, 128, 128)  # the window its card records, as a run uses


def test_prune_and_distill_call_the_compression_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlm_medical.deploy import classify_spec, segment_spec

    calls: list[tuple[object, ...]] = []
    prune = types.ModuleType("vlm_medical.prune")
    prune.prune_segmenter = lambda *a: calls.append(("prune", *a)) or Path("p")  # type: ignore[attr-defined]
    distill = types.ModuleType("vlm_medical.distill")
    distill.distill_classifier = lambda *a: calls.append(("distill", *a)) or Path("d")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vlm_medical.prune", prune)
    monkeypatch.setitem(sys.modules, "vlm_medical.distill", distill)
    seg, cls = segment_spec(), classify_spec()
    assert seg.prune is not None and cls.distill is not None
    assert seg.prune("L", 0.3, Path("o"), 5) == Path("p")
    assert cls.distill("L", Path("o"), 6) == Path("d")
    assert calls == [("prune", "L", 0.3, Path("o"), 5), ("distill", "L", Path("o"), 6)]
    assert seg.distill is None and cls.prune is None


@pytest.mark.parametrize("task", [SEGMENT, CLASSIFY])
def test_a_corrupt_onnx_file_is_refused_in_one_line(
    task: str, tmp_path: Path, vlm_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    bundled = "segment-unet3d" if task == SEGMENT else "classify-densenet"
    source = package_file("vlm_medical", "weights", bundled, "model.json")
    onnx_file = corrupt_onnx_export(tmp_path / "export", task, source, task.split(".")[1])
    sample = str(VOLUME if task == SEGMENT else CUBE)
    argv = ["run", task, sample, "--out", str(tmp_path / "o"), "--device", "cpu"]
    check_corrupt_exports_refused(vlm_cli, argv, onnx_file)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*/mask*"))


# --- exports of the bundled networks (10-25 s each) ----------------------------------------------

CASES = [
    pytest.param(SEGMENT, "", "onnx", id="unet3d-onnx"),
    pytest.param(SEGMENT, "", "pt2", id="unet3d-pt2"),
    pytest.param(SEGMENT, WEIGHTS_2D, "onnx", id="unet2d-onnx"),
    pytest.param(SEGMENT, WEIGHTS_2D, "pt2", id="unet2d-pt2"),
    pytest.param(CLASSIFY, "", "onnx", id="densenet-onnx"),
    pytest.param(CLASSIFY, "", "pt2", id="densenet-pt2"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "weights", "fmt"), CASES)
def test_export_matches_the_torch_network_on_held_out_data(
    exports: Callable[..., Exported], task: str, weights: str, fmt: str
) -> None:
    exported = exports(task, fmt, weights)
    parity = exported.parity
    assert parity["passed"] and parity["seed"] == PARITY_SEED and parity["inputs"] == 8
    assert parity["max_abs"] <= TOLERANCE[fmt], parity
    metric = parity["metric"]
    # the bundled weights on their held-out seeds (TRAINING.md): 3D Dice 0.99, 2D (through the
    # run's 64-pixel window) 0.86-0.87, accuracy 0.92; the same data, the same answers
    floor, examples = {
        (SEGMENT, ""): (0.95, 8),
        (SEGMENT, WEIGHTS_2D): (0.8, 24),
        (CLASSIFY, ""): (0.85, 64),
    }[task, weights]
    assert metric["examples"] == examples
    assert floor <= metric["reference"] and metric["candidate"] == pytest.approx(
        metric["reference"], rel=1e-3
    )
    sidecar = json.loads((exported.path.parent / "model.json").read_text())
    (entry,) = sidecar["export"]["inputs"]
    assert entry["name"] == "image" and sidecar["export"]["outputs"] == ["logits"]
    dims = 3 if task == CLASSIFY or not weights else 2
    expected = {"0": "batch"} if task == CLASSIFY else {"0": "batch", "2": "i", "3": "j"}
    if task == SEGMENT and dims == 3:
        expected["4"] = "k"
    assert entry["dynamic"] == expected and len(entry["shape"]) == 2 + dims


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_an_exported_unet_takes_every_window_the_run_cuts(
    exports: Callable[..., Exported], fmt: str
) -> None:
    from vlm_medical.segment import SEGMENTERS

    from vlm_core.deploy.programs import load_program
    from vlm_core.weights import load_model

    program = load_program(exports(SEGMENT, fmt).path)
    if fmt == "pt2":  # and it loads back with torch.export.load
        assert isinstance(
            torch.export.load(str(exports(SEGMENT, fmt).path)), torch.export.ExportedProgram
        )
    network = load_model("", SEGMENTERS[3]).module
    generator = torch.Generator().manual_seed(11)
    for shape in [(3, 1, 24, 40, 56), (1, 1, 16, 16, 16), (5, 1, 96, 32, 16)]:
        x = torch.rand(shape, generator=generator)
        with torch.no_grad():
            assert float((network(x) - program(x)).abs().max()) <= TOLERANCE[fmt]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_run_of_the_exported_3d_unet_writes_the_torch_weights_files(
    exports: Callable[..., Exported], fmt: str, tmp_path: Path
) -> None:
    exported = exports(SEGMENT, fmt)
    ours = run(SEGMENT, [VOLUME], tmp_path / "torch")
    theirs = run(SEGMENT, [VOLUME], tmp_path / fmt, weights=str(exported.path))
    a, b = ours.results[0].outputs["mask"], theirs.results[0].outputs["mask"]
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.labels.max() == 1  # lesions found
    assert _files(tmp_path / "torch") == _files(tmp_path / fmt)  # mask, overlay, measurements
    assert theirs.results[0].ood is None  # no familiarity model reads an exported network


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_run_of_the_exported_2d_unet_writes_the_torch_weights_files(
    exports: Callable[..., Exported], fmt: str, tmp_path: Path
) -> None:
    from PIL import Image
    from vlm_medical.intensity import normalize
    from vlm_medical.synthetic import make_image

    image = make_image(np.random.RandomState(PARITY_SEED + 999))[0]
    png = tmp_path / "slice.png"
    Image.fromarray((normalize(image, "auto") * 255).astype(np.uint8)).save(png)
    exported = exports(SEGMENT, fmt, WEIGHTS_2D)
    ours = run(SEGMENT, [png], tmp_path / "torch")  # the bundled 2D UNet for an image
    theirs = run(SEGMENT, [png], tmp_path / fmt, weights=str(exported.path))
    a, b = ours.results[0].outputs["mask"], theirs.results[0].outputs["mask"]
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.labels.max() == 1
    assert _files(tmp_path / "torch") == _files(tmp_path / fmt)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_run_of_the_exported_densenet_gives_the_class_without_grad_cam(
    exports: Callable[..., Exported],
    fmt: str,
    tmp_path: Path,
    vlm_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    from vlm_medical.classify import EXPORTED_NOTE

    exported = exports(CLASSIFY, fmt)
    ours = run(CLASSIFY, [CUBE, VOLUME], tmp_path / "torch").results
    theirs = run(CLASSIFY, [CUBE, VOLUME], tmp_path / fmt, weights=str(exported.path)).results
    for a, b in zip(ours, theirs, strict=True):
        assert b.outputs["class"].text == a.outputs["class"].text
        for name, p in a.outputs["probabilities"].values.items():
            assert b.outputs["probabilities"].values[name] == pytest.approx(p, abs=1e-6)
        assert {"gradcam", "heatmap", "explanation"} <= set(a.outputs)
        assert set(b.outputs) == {"class", "probabilities", "note"}
        assert b.outputs["note"].text == EXPORTED_NOTE.format(fmt=fmt.upper())
    # choosing the map the export cannot make is refused, before anything is written
    for param in ("explain=lesion", "cam_layer=features.denseblock1"):
        argv = ["run", CLASSIFY, str(CUBE), "--out", str(tmp_path / "x"), "--device", "cpu"]
        done = vlm_cli(*argv, "-p", f"weights={exported.path}", "-p", param)
        code, stderr = done.returncode, done.stderr
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert "cannot compute (it has no gradients)" in stderr


@pytest.mark.parametrize("task", [SEGMENT, CLASSIFY])
def test_a_quick_pt2_export_runs_the_whole_check(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default tier's export: .pt2 (the fastest format) of the 2D UNet and the DenseNet
    (the 3D UNet takes 8 s here) on one held-out input and a small metric set; the slow tests
    export every network in both formats at full size."""
    import vlm_medical.deploy as deploy

    monkeypatch.setattr(deploy, "SEGMENT_IMAGES", 1)
    monkeypatch.setattr(deploy, "CLASSIFY_VOLUMES", 8)
    weights = WEIGHTS_2D if task == SEGMENT else ""
    exported = _export(tmp_path / "out", task, "pt2", weights, count=1)
    parity = exported.parity
    assert parity["passed"] and parity["inputs"] == 1 and parity["max_abs"] <= 1e-5
    metric = parity["metric"]
    assert metric["examples"] == (1 if task == SEGMENT else 8)
    assert metric["candidate"] == metric["reference"] > 0.5
