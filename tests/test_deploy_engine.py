"""The deploy engine on a toy task: `vlm export` (ONNX and .pt2) with its parity check and
sidecar, running the exported file through the one weights path, int8 compression, and the
bad requests (one line, exit 2, nothing written)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vlm_core.deploy import writers
from vlm_core.deploy.compress import compress_task
from vlm_core.deploy.export import ParityError, export_task
from vlm_core.deploy.spec import Axis, DeploySpec, ParityCases, TensorSpec
from vlm_core.errors import ParameterError, UsageError
from vlm_core.plugins import Registry
from vlm_core.tasks import TaskSpec
from vlm_core.weights import ModelRecipe, WeightsRequestError, load_model, sha256_of

pytest.importorskip("onnxruntime")

TASK = "toy.net"


class Net(nn.Module):
    """Two convolutions and a pooled linear head: logits (B, 3)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
        )
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


RECIPE = ModelRecipe(task=TASK, name="net", build=lambda card: Net(card["architecture"]["width"]))


def _weights(folder: Path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder.mkdir(parents=True)
    path = folder / "model.safetensors"
    save_file(Net(8).state_dict(), str(path))
    sidecar = {
        "task": TASK,
        "card": {"architecture": {"width": 8}},
        "files": {path.name: sha256_of(path)},
    }
    (folder / "model.json").write_text(json.dumps(sidecar))
    return path


def _cases(loaded, count: int, seed: int) -> ParityCases:
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(2, 3, 16, 16, generator=g),) for _ in range(count)]
    labels = [b[0].mean(dim=(1, 2, 3)).gt(0).long() for b in batches]

    def accuracy(network) -> float:
        right = sum(
            int((network(*b).argmax(1) == y).sum()) for b, y in zip(batches, labels, strict=True)
        )
        return right / (2 * count)

    return ParityCases(batches, accuracy, "accuracy", metric_count=2 * count)


def _spec(**changes) -> DeploySpec:
    spec = DeploySpec(
        load=lambda weights, params: load_model(weights, RECIPE),
        inputs=(
            TensorSpec(
                "images",
                {0: Axis("batch", 1, 64), 2: Axis("height", 8, 64), 3: Axis("width", 8, 64)},
            ),
        ),
        outputs=("logits",),
        example=lambda loaded: (torch.randn(2, 3, 16, 16),),
        cases=_cases,
    )
    return dataclasses.replace(spec, **changes)


def _registry(spec: DeploySpec | None) -> Registry:
    task = TaskSpec(id=TASK, title="Toy", description="a toy", domain="test", run="x:y",
                    deploy=(lambda: spec) if spec else None)  # fmt: skip
    return Registry(plugins={}, tasks={TASK: task}, manager=None)  # type: ignore[arg-type]


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return _weights(tmp_path / "trained")


def test_onnx_export_matches_and_runs_through_the_weights_path(
    weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "onnx"
    done = export_task(
        TASK, out=out, weights=str(weights), fmt="onnx", count=3, registry=_registry(_spec())
    )
    sidecar = json.loads((out / "model.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert sidecar["files"]["model.onnx"] == sha256_of(out / "model.onnx")
    export = sidecar["export"]
    assert export["opset"] == writers.DEFAULT_OPSET and export["versions"]["onnxruntime"]
    assert export["parity"]["passed"] and export["parity"]["max_abs"] < 1e-5
    assert export["parity"]["metric"]["reference"] == export["parity"]["metric"]["candidate"]
    assert sidecar["source"]["sha256"] == sha256_of(weights)
    # the folder and the file load as the same task's network; dynamic batch and size
    torch_net = load_model(str(weights), RECIPE).module
    for ref in (out, done.path):
        loaded = load_model(str(ref), RECIPE)
        assert loaded.exported == "onnx" and loaded.card["architecture"]["width"] == 8
        x = torch.randn(5, 3, 24, 32)
        assert torch.allclose(loaded.module(x), torch_net(x), atol=1e-5)
        assert loaded.judge(torch.zeros(5, 4)) == [None] * 5


def test_pt2_export_loads_back_with_torch_export(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "pt2"
    done = export_task(
        TASK, out=out, weights=str(weights), fmt="pt2", count=2, registry=_registry(_spec())
    )
    program = torch.export.load(str(done.path)).module()
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(program(x), load_model(str(weights), RECIPE).module(x), atol=1e-5)
    assert load_model(str(out), RECIPE).exported == "pt2"


def test_failed_parity_writes_nothing(weights: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(
        __import__("vlm_core.deploy.parity", fromlist=["x"]).TOLERANCE, "onnx", -1.0
    )
    out = tmp_path / "exports" / "bad"
    with pytest.raises(ParityError, match="does not match: max-abs"):
        export_task(TASK, out=out, weights=str(weights), count=1, registry=_registry(_spec()))
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_bad_requests_are_refused_before_anything_is_written(
    weights: Path, tmp_path: Path, monkeypatch
) -> None:
    registry = _registry(_spec())
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ParameterError, match="not an empty folder"):
        export_task(TASK, out=full, weights=str(weights), registry=registry)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    with pytest.raises(
        UsageError,
        match="cannot take a dynamic 'depth' axis; its dynamic axes: batch, height, width",
    ):
        export_task(
            TASK, out=tmp_path / "o", weights=str(weights), dynamic=["depth"], registry=registry
        )
    with pytest.raises(UsageError, match="has no exportable network"):
        export_task(TASK, out=tmp_path / "o", registry=_registry(None))
    with pytest.raises(UsageError, match="unknown format 'tflite'"):
        export_task(TASK, out=tmp_path / "o", fmt="tflite", registry=registry)
    real = __import__("importlib.util", fromlist=["x"]).find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec",
        lambda name, *a: None if name == "onnxscript" else real(name, *a),
    )
    with pytest.raises(UsageError, match=r"onnxscript missing\): pip install 'vlm-core\[deploy\]'"):
        export_task(TASK, out=tmp_path / "o", weights=str(weights), registry=registry)
    assert not (tmp_path / "o").exists()


def _mixed_cases(loaded, count: int, seed: int) -> ParityCases:
    """Held-out inputs of several sizes, and a metric over the larger ones."""
    sizes = [(2, 16), (1, 16), (2, 24)]
    batches = [(torch.rand(b, 3, side, side),) for b, side in sizes]
    return ParityCases(batches, lambda net: float(net(*batches[2]).mean()), "mean logit", 1)


def test_a_static_export_refuses_other_sizes(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "static"
    spec = _spec(cases=_mixed_cases)
    done = export_task(TASK, out=out, weights=str(weights), dynamic=[], registry=_registry(spec))
    parity = done.parity
    assert parity["passed"] and parity["inputs"] == 1  # only the example's size fits
    assert parity["metric"]["candidate"] is None
    assert parity["metric"]["not_measured"].startswith("the static graph cannot take")
    loaded = load_model(str(out), RECIPE)
    assert loaded.module(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        loaded.module(torch.randn(2, 3, 20, 16))
    # the same cases through a dynamic export: all three compared, the metric measured
    dynamic = export_task(
        TASK, out=tmp_path / "dyn", weights=str(weights), registry=_registry(spec)
    )
    assert dynamic.parity["inputs"] == 3 and dynamic.parity["metric"]["candidate"] is not None


def test_corrupt_or_partial_exports_are_the_requests_fault(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    export_task(TASK, out=out, weights=str(weights), count=1, registry=_registry(_spec()))
    onnx_file = out / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07garbage" + onnx_file.read_bytes()[:100])
    with pytest.raises(WeightsRequestError, match="sha256 mismatch"):
        load_model(str(onnx_file), RECIPE)
    sidecar = json.loads((out / "model.json").read_text())
    sidecar["files"]["model.onnx"] = sha256_of(onnx_file)  # a consistent but corrupt export
    (out / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(WeightsRequestError, match=r"model\.onnx is not an ONNX model") as caught:
        load_model(str(onnx_file), RECIPE)
    assert "\n" not in str(caught.value)
    (out / "model.json").unlink()
    with pytest.raises(WeightsRequestError, match=r"no model\.json beside it"):
        load_model(str(onnx_file), RECIPE)


def test_exports_that_are_not_the_run_network_are_refused(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "encoder"
    spec = _spec(runs=False, note="the image encoder only")
    export_task(TASK, out=out, weights=str(weights), count=1, registry=_registry(spec))
    refused = r"cannot run as toy\.net's net: the export holds the image encoder only"
    with pytest.raises(WeightsRequestError, match=refused):
        load_model(str(out), RECIPE)
    with pytest.raises(WeightsRequestError, match="cannot be trained or fine-tuned"):
        load_model(str(out), RECIPE, fresh=True)


def test_int8_compression_reports_and_runs(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    done = compress_task(TASK, out=out, method="int8", weights=str(weights), count=2, calibration=4,
                         rounds=2, registry=_registry(_spec()))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["compress.json", "model.json", "model.onnx"]
    report = json.loads((out / "compress.json").read_text())
    assert report == json.loads(json.dumps(done.report, default=str))
    assert set(report["cpu_ms"]) >= {"torch_fp32", "onnx_fp32", "onnx_int8"}
    assert report["size_bytes"]["onnx_int8"] < report["size_bytes"]["onnx_fp32"]
    assert 0 <= report["metric"]["candidate"] <= 1 and report["differences"]["inputs"] == 2
    graph_ops = {n.op_type for n in __import__("onnx").load(str(done.path)).graph.node}
    assert "QuantizeLinear" in graph_ops and "DequantizeLinear" in graph_ops
    loaded = load_model(str(out), RECIPE)
    x = torch.randn(2, 3, 16, 16)
    assert loaded.exported == "onnx" and loaded.module(x).shape == (2, 3)
    with pytest.raises(UsageError, match="cannot prune; its methods: int8"):
        compress_task(
            TASK,
            out=tmp_path / "p",
            method="prune",
            weights=str(weights),
            registry=_registry(_spec()),
        )


def test_a_deploy_that_is_not_module_function_is_a_spec_problem() -> None:
    from vlm_core.tasks import validate_spec

    spec = TaskSpec(id=TASK, title="Toy", description="a toy", domain="test", run="x:y",
                    outputs=("labels",), deploy="not a reference")  # fmt: skip
    assert "task 'toy.net': deploy must be 'module:function', got 'not a reference'" in (
        validate_spec(spec, "toy")
    )


@pytest.fixture
def toy_cli(monkeypatch):
    """`vlm export`/`vlm compress` seeing the toy task."""
    registry = _registry(_spec())
    monkeypatch.setattr("vlm_core.deploy.export.get_registry", lambda: registry)
    return registry


def test_cli_export_prints_parity_and_refuses_bad_requests_in_one_line(
    weights: Path, tmp_path: Path, toy_cli, capsys
) -> None:
    from conftest import cli

    out = tmp_path / "cli"
    code, stdout, _ = cli(["export", TASK, "--weights", str(weights), "--out", str(out),
                           "--count", "2"], capsys)  # fmt: skip
    assert code == 0, stdout
    assert f"wrote {out / 'model.onnx'}" in stdout and "parity: max-abs" in stdout
    assert f"run it: vlm run {TASK} INPUTS -p weights={out / 'model.onnx'}" in stdout
    for argv, message in [
        (["--out", str(out)], f"error: --out {out} exists and is not an empty folder"),
        (["--out", str(tmp_path / "n"), "--dynamic", "depth", "--weights", str(weights)],
         "cannot take a dynamic 'depth'"),
        (["--out", str(tmp_path / "n"), "--weights", str(tmp_path / "nope.safetensors")],
         "no such file"),
        (["--out", str(tmp_path / "n"), "--weights", str(out / "model.onnx")],
         "is already an exported network; give torch weights"),
    ]:  # fmt: skip
        code, stdout, stderr = cli(["export", TASK, *argv], capsys)
        assert code == 2 and message in stderr and stderr.count("\n") == 1, (argv, stderr)
    code, _, stderr = cli(["compress", TASK, "--method", "distill", "--weights", str(weights),
                           "--out", str(tmp_path / "d")], capsys)  # fmt: skip
    assert code == 2 and "cannot distill; its methods: int8" in stderr
    assert not (tmp_path / "n").exists() and not (tmp_path / "d").exists()


def test_prune_trains_in_out_itself_and_leaves_nothing_when_it_fails(
    weights: Path, tmp_path: Path
) -> None:
    seen: list[Path] = []

    def prune(loaded, amount: float, out: Path, seed: int) -> Path:
        seen.append(out)
        return _weights(out / "pruned")  # a weights folder, as a fine-tune writes one

    def broken(loaded, amount: float, out: Path, seed: int) -> Path:
        (out / "checkpoints").mkdir()
        raise RuntimeError("the fine-tune diverged")

    out = tmp_path / "pruned"
    done = compress_task(TASK, out=out, method="prune", weights=str(weights), rounds=2,
                         registry=_registry(_spec(prune=prune)))  # fmt: skip
    assert seen == [out] and done.path == out / "pruned" / "model.safetensors"
    report = json.loads((out / "compress.json").read_text())
    assert report["parameters"] == {"original": 835, "compressed": 835} and report["amount"] == 0.5
    assert report["metric"]["name"] == "accuracy" and report["runs"]
    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="diverged"):
        compress_task(TASK, out=failed, method="prune", weights=str(weights),
                      registry=_registry(_spec(prune=broken)))  # fmt: skip
    assert not failed.exists()
