"""`vlm export driving.detect`: the FCOS network (backbone + head convolutions) as ONNX and
.pt2 with its parity check, `vlm run -p weights=model.onnx|.pt2` giving the torch run's
detections through torchvision's own post-processing, and bad exported files refused."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from vlm_driving.deploy import HeadOutputs, fcos_running, output_names
from vlm_driving.detector import DETECTOR, Detector, DetectSettings, load_detector
from vlm_driving.scenes import scene

from vlm_core.deploy.export import PARITY_SEED, export_task
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.testing.exports import check_corrupt_exports_refused, corrupt_onnx_export
from vlm_core.types import Boxes
from vlm_core.weights import load_model

SAMPLES = Path(__file__).resolve().parents[1] / "vlm_driving" / "samples"
BUNDLED_SIDECAR = SAMPLES.parent / "weights" / "detector" / "model.json"


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    return vlm_home


def test_torchvision_fcos_around_the_head_outputs_gives_the_torch_detections() -> None:
    """The run's path for an exported network, fed by the torch network itself: the same boxes,
    scores and labels as the torch detector on held-out scenes (so the only difference an export
    can make is its network's float error), and the outputs are named level by level."""
    loaded = load_model("", DETECTOR)
    network = HeadOutputs(loaded.module).eval()
    frames = [scene(PARITY_SEED, 640, 360).image]
    settings = DetectSettings(score=0.05)
    ours = Detector(loaded, network=network)
    assert not ours.checks_familiarity and ours.module is not loaded.module
    assert sum(p.numel() for p in ours.module.parameters()) == 0  # nothing of its own
    theirs = Detector(loaded)(frames, settings)
    found = ours(frames, settings)
    assert sum(len(d.scores) for d in theirs) > 5
    for a, b in zip(theirs, found, strict=True):  # the same kernels on the same tensors
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.scores, b.scores)
    with torch.no_grad():
        outs = network(torch.zeros(1, 3, 224, 416))
    assert len(outs) == len(output_names()) == 15
    assert [tuple(t.shape) for t in outs[:3]] == [(1, 9, 28, 52), (1, 4, 28, 52), (1, 1, 28, 52)]
    assert tuple(outs[-1].shape) == (1, 1, 2, 4)  # P7's centre-ness
    assert float(outs[1].min()) >= 0.0  # the regression after torchvision's ReLU


def test_a_network_with_other_outputs_is_refused_in_one_line() -> None:
    from vlm_core.errors import UsageError

    loaded = load_model("", DETECTOR)
    shell = fcos_running(torch.nn.Identity(), loaded.card)
    shell.eval()
    with pytest.raises(UsageError, match="returned 1 tensors, not 15"):
        shell([torch.rand(3, 224, 400)])


def test_a_corrupt_onnx_as_weights_is_exit_2_in_one_line(
    tmp_path: Path, vlm_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    onnx_file = corrupt_onnx_export(
        tmp_path / "export", "driving.detect", BUNDLED_SIDECAR, "detector"
    )
    argv = ["run", "driving.detect", str(SAMPLES / "street.png"), "--out", str(tmp_path / "o")]
    check_corrupt_exports_refused(vlm_cli, argv, onnx_file)


# --------------------------------------------------------------------------- real exports


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The bundled detector exported once as ONNX and as .pt2 (4 held-out inputs)."""
    out = tmp_path_factory.mktemp("driving-export")
    return {
        fmt: export_task("driving.detect", out=out / fmt, fmt=fmt, count=4)
        for fmt in ("onnx", "pt2")
    }


def _boxes(weights: str, out: Path) -> Boxes:
    params = {"weights": weights} if weights else {}
    request = RunRequest(
        "driving.detect", [str(SAMPLES / "street.png")], params, device="cpu", out_dir=out
    )
    outcome = run_task(request, registry=load_registry(), keep_results=True)
    result = outcome.results[0]
    boxes = result.outputs["detections"]
    assert isinstance(boxes, Boxes)
    return boxes


def _written(out: Path) -> list[dict[str, Any]]:
    """The boxes of the run's result.json (what `vlm run` wrote)."""
    document = json.loads((out / "street" / "result.json").read_text())
    return list(document["outputs"]["detections"]["boxes"])


@pytest.mark.slow  # two exports with their parity checks: ~1 min on 2 CPU cores
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_an_export_passes_parity_and_runs_as_the_torch_weights(
    exports: dict[str, Any], fmt: str, tmp_path: Path
) -> None:
    exported = exports[fmt]
    parity = exported.parity
    assert parity["passed"], parity
    assert parity["max_abs"] <= (1e-4 if fmt == "onnx" else 1e-5), parity
    metric = parity["metric"]
    assert metric["name"] == "mAP@.5" and metric["examples"] == 32
    assert metric["reference"] > 0.8 and abs(metric["relative_change"]) <= 0.005, metric
    sidecar = exported.sidecar["export"]
    assert sidecar["outputs"] == list(output_names())
    assert sidecar["inputs"][0]["dynamic"] == {"0": "batch", "2": "height", "3": "width"}

    torch_boxes = _boxes("", tmp_path / "torch")
    ours = _boxes(str(exported.path), tmp_path / fmt)
    assert len(torch_boxes.scores) >= 3
    assert ours.labels == torch_boxes.labels
    np.testing.assert_allclose(ours.xyxy, torch_boxes.xyxy, atol=1e-3)
    np.testing.assert_allclose(ours.scores, torch_boxes.scores, atol=1e-4)
    # the files: the same boxes within the print precision, and no familiarity verdict
    theirs, written = _written(tmp_path / "torch"), _written(tmp_path / fmt)
    assert [b["label"] for b in written] == [b["label"] for b in theirs]
    for a, b in zip(theirs, written, strict=True):
        assert abs(a["score"] - b["score"]) <= 1e-4
        assert np.abs(np.subtract(a["xyxy"], b["xyxy"])).max() <= 1e-2
    document = json.loads((tmp_path / fmt / "street" / "result.json").read_text())
    assert document["ood"] is None
    # the cached program loads back as an exported detector (no torch module to explain)
    detector = load_detector(str(exported.path))
    assert detector.exported == fmt and detector.name.endswith(f"({fmt} export)")


@pytest.mark.slow
def test_an_exported_detector_refuses_to_explain_in_one_line(
    exports: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from vlm_core.cli import main

    street = SAMPLES / "street.png"
    path = exports["onnx"].path
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "driving.detect", str(street), "-p", f"weights={path}",
              "-p", "explainer=occlusion"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no gradients or layers to explain" in err, err


@pytest.mark.slow
def test_the_pt2_detector_refuses_images_under_its_smallest_side_and_the_onnx_runs_them(
    exports: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch.export's program asserts every pyramid map is at least 2x2 (sides of 160 px as
    the detector sees them): at input_size=64 the .pt2 run is refused in one line, and the
    ONNX graph, which has no such assertion, gives the torch detections."""
    from vlm_core.cli import main

    street = SAMPLES / "street.png"
    small = ["-p", "input_size=64", "-p", "score_threshold=0.05"]
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "driving.detect", str(street), "-p", f"weights={exports['pt2'].path}",
              *small])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 160 px a side" in err, err
    frames = [scene(PARITY_SEED + 500 + i, 1280, 720).image for i in range(3)]
    settings = DetectSettings(score=0.05, input_size=128)  # seen at 227x128: padded 256x128
    theirs = load_detector("")(frames, settings)
    ours = load_detector(str(exports["onnx"].path))(frames, settings)
    assert sum(len(d.scores) for d in theirs) > 5
    for a, b in zip(theirs, ours, strict=True):
        np.testing.assert_array_equal(b.labels, a.labels)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
        np.testing.assert_allclose(b.xyxy, a.xyxy, atol=1e-2)
