"""`vlm export art.generate`: the sampling generator as .pt2 and ONNX with its parity check
(held-out latents, the style classifier's accuracy of both), `art.generate` running the export
with the same images as the torch weights, and the refusals (style interpolation, corrupt
files: one line, exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm_core.deploy.export import PARITY_SEED, Exported, export_task
from vlm_core.errors import UsageError
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.testing.exports import check_corrupt_exports_refused, corrupt_onnx_export
from vlm_core.weights import sha256_of

pytest.importorskip("onnxruntime")

TASK = "art.generate"
#: the most a pixel value of an exported run may differ from the torch run's, in uint8 levels:
#: at the generator's own 32 px, one level (ONNX's last-bit differences, max-abs ~4e-6 in
#: [-1, 1], can round a value the other way: 1-7 of 196,608 values per 64 images, seeds 0-4);
#: enlarged (the default upscale=4), two, since PIL's Lanczos resamples in two uint8 passes
#: (18-186 of 3,145,728 values). The .pt2 runs measured bit-identical.
MAX_LEVELS = {False: 1, True: 2}
#: and the share of pixel values that may differ at all
MAX_DIFFERENT = 1e-3


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    """A private VLM_HOME (the vlm pytest plugin's): runs and the run store stay out of the
    user's own."""
    return vlm_home


def _export(out: Path, fmt: str, weights: str = "") -> Exported:
    """``export_task`` with the registry of a private VLM_HOME (module fixtures run outside the
    per-test one)."""
    with pytest.MonkeyPatch.context() as patch:
        home = out.parent / "vlm-home"
        home.mkdir(exist_ok=True)
        patch.setenv("VLM_HOME", str(home))
        return export_task(TASK, out=out, weights=weights, fmt=fmt, registry=load_registry())


@pytest.fixture(scope="module")
def pt2(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The bundled generator exported as .pt2 (2 s warm, 15-25 s in a fresh process on the
    shared 2-core CPU: the tests that need it are slow)."""
    return _export(tmp_path_factory.mktemp("art-pt2") / "out", "pt2")


def run(**params: object):  # type: ignore[no-untyped-def]
    request = RunRequest(TASK, [], dict(params), device="cpu")
    return run_task(request, registry=load_registry(), keep_results=True)


def _pixels(result, key: str) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return [image.pixels for image in result.results[0].outputs[key].images]


def _assert_same_images(
    ours: list[np.ndarray], theirs: list[np.ndarray], *, upscaled: bool
) -> None:
    assert len(ours) == len(theirs) and ours
    a, b = np.stack(ours).astype(int), np.stack(theirs).astype(int)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    assert diff.max() <= MAX_LEVELS[upscaled], diff.max()
    assert (diff > 0).mean() <= MAX_DIFFERENT, (diff > 0).mean()


def _parity_holds(exported: Exported, tolerance: float) -> None:
    parity = exported.parity
    assert parity["passed"] and parity["seed"] == PARITY_SEED
    assert parity["max_abs"] <= tolerance and parity["inputs"] == 8
    metric = parity["metric"]
    assert metric["name"] == "style accuracy" and metric["examples"] == 100
    # the bundled weights: 0.919 on 1,000 samples (README); the same samples, the same verdicts
    assert 0.8 <= metric["reference"] == metric["candidate"]


@pytest.mark.slow
def test_pt2_export_of_the_generator_matches_and_loads_back(pt2: Exported) -> None:
    _parity_holds(pt2, 1e-5)
    sidecar = json.loads((pt2.path.parent / "model.json").read_text())
    assert sidecar["export"]["runs"] and sidecar["export"]["network"] == "generator"
    assert [i["name"] for i in sidecar["export"]["inputs"]] == ["z", "y"]
    assert sidecar["export"]["inputs"][1]["dtype"] == "int64"
    program = torch.export.load(str(pt2.path)).module()
    from vlm_art.deploy import network
    from vlm_art.generate import GENERATOR

    from vlm_core.weights import load_model

    z, y = torch.randn(7, 128, generator=torch.Generator().manual_seed(3)), torch.arange(7) % 5
    with torch.no_grad():
        ours = network(load_model("", GENERATOR))(z, y)
        theirs = program(z, y)
    assert theirs.shape == (7, 3, 32, 32)
    assert float((ours - theirs).abs().max()) <= 1e-5


@pytest.mark.slow
def test_an_exported_generator_makes_the_torch_weights_images(
    pt2: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlm_core.deploy.programs import Pt2Program

    calls: list[int] = []
    forward = Pt2Program.forward

    def counted(self, *tensors):  # type: ignore[no-untyped-def]
        calls.append(len(tensors[0]))
        return forward(self, *tensors)

    monkeypatch.setattr(Pt2Program, "forward", counted)
    torch_run = run(count=10, seed=1)
    assert calls == []
    exported_run = run(count=10, seed=1, weights=str(pt2.path))
    assert calls == [10]  # the exported graph made the images, one call for the batch
    provenance = exported_run.results[0].provenance
    assert provenance.weights_sha256 == {"generator": sha256_of(pt2.path)}
    _assert_same_images(
        _pixels(torch_run, "images"), _pixels(exported_run, "images"), upscaled=True
    )
    labels = exported_run.results[0].outputs["images"].labels
    assert labels == torch_run.results[0].outputs["images"].labels
    # the slerp between two seeds runs in Python around the exported graph
    frames = {"mode": "interpolate", "styles": "circles", "frames": 6, "seed": 3, "upscale": 1}
    _assert_same_images(
        _pixels(run(**frames), "frames"),
        _pixels(run(**frames, weights=str(pt2.path)), "frames"),
        upscaled=False,
    )


@pytest.mark.slow
def test_style_interpolation_refuses_an_exported_generator(
    pt2: Exported, vlm_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    params = {"mode": "interpolate", "between": "styles", "styles": "circles,stripes"}
    with pytest.raises(UsageError, match="blends the class embeddings inside the generator"):
        run(**params, weights=str(pt2.path))
    argv = ["run", TASK, "--out", str(tmp_path / "o"), "-p", f"weights={pt2.path}"]
    done = vlm_cli(
        *[*argv, "-p", "mode=interpolate", "-p", "between=styles", "-p", "styles=circles,stripes"]
    )
    code, stderr = done.returncode, done.stderr
    assert code == 2 and stderr.count("\n") == 1 and "an exported model cannot" in stderr
    assert not (tmp_path / "o" / "result").exists()


def test_a_corrupt_onnx_file_is_refused_in_one_line(
    tmp_path: Path, vlm_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    from vlm_art.generate import default_weights

    source = Path(default_weights()).parent / "model.json"
    onnx_file = corrupt_onnx_export(tmp_path / "export", TASK, source, "generator")
    argv = ["run", TASK, "--out", str(tmp_path / "o"), "-p", "count=2"]
    check_corrupt_exports_refused(vlm_cli, argv, onnx_file)
    assert not (tmp_path / "o" / "result").exists()


def test_the_exported_module_is_the_generator_with_a_symbolic_batch() -> None:
    """The Sampler is the generator (y for conditional weights only): the same images, and a
    batch the export keeps symbolic (the core's generators shape with unflatten, not len)."""
    from vlm_art.deploy import Sampler, network, spec
    from vlm_art.evaluation import baseline_weights
    from vlm_art.generate import GENERATOR

    from vlm_core.gan.models import GAN
    from vlm_core.weights import load_model

    z, y = torch.randn(3, 128, generator=torch.Generator().manual_seed(5)), torch.tensor([4, 0, 2])
    for weights, labels in (("", y), (baseline_weights(), None)):
        gan = load_model(weights, GENERATOR).module
        assert isinstance(gan, GAN)
        sampler = network(load_model(weights, GENERATOR))
        assert isinstance(sampler, Sampler)
        with torch.no_grad():
            assert torch.equal(sampler(z, y), gan.generator(z, labels))
    deploy = spec()
    assert [s.name for s in deploy.inputs] == ["z", "y"] and deploy.runs
    assert {a.name for s in deploy.inputs for a in s.dynamic.values()} == {"batch"}
    cases = deploy.cases(load_model("", GENERATOR), 5, PARITY_SEED)
    again = deploy.cases(load_model("", GENERATOR), 5, PARITY_SEED)
    assert [tuple(t.shape[0] for t in c) for c in cases.inputs] == [(1, 1), (2, 2), (3, 3),
                                                                      (5, 5), (1, 1)]  # fmt: skip
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(cases.inputs, again.inputs, strict=True))  # fmt: skip
    assert cases.metric_count == 100 and cases.metric_name == "style accuracy"


def test_style_interpolation_needs_the_torch_generator() -> None:
    from vlm_art.generate import ExportedGenerator, interpolate_styles

    exported = ExportedGenerator(torch.nn.Identity(), ("circles", "stripes"), "", 128, 2)
    with pytest.raises(UsageError, match="blends the class embeddings") as caught:
        interpolate_styles(exported, 0, 1, torch.zeros(128), 4)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_unconditional_weights_export_without_a_metric(tmp_path: Path) -> None:
    from vlm_art.evaluation import baseline_weights

    exported = _export(tmp_path / "dcgan", "pt2", weights=baseline_weights())
    assert exported.parity["passed"] and exported.parity["metric"] is None  # no styles to judge
    torch_run = run(count=4, seed=2, upscale=1, weights=baseline_weights())
    exported_run = run(count=4, seed=2, upscale=1, weights=str(exported.path))
    _assert_same_images(
        _pixels(torch_run, "images"), _pixels(exported_run, "images"), upscaled=False
    )


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """The bundled generator exported as ONNX (about 8 s on the 2-core CPU)."""
    folder = tmp_path_factory.mktemp("art-onnx")
    yield _export(folder / "out", "onnx")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_onnx_export_of_the_generator_matches(onnx_export: Exported) -> None:
    _parity_holds(onnx_export, 1e-4)
    import onnx

    graph = onnx.load(str(onnx_export.path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in graph.input}  # fmt: skip
    assert dims == {"z": ["batch", 128], "y": ["batch"]}


@pytest.mark.slow
@pytest.mark.parametrize("upscale", [4, 1])
def test_vlm_run_with_the_onnx_file_writes_the_torch_weights_images(
    onnx_export: Exported,
    upscale: int,
    tmp_path: Path,
    vlm_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    from PIL import Image

    outputs = {}
    for name, extra in (("torch", []), ("onnx", ["-p", f"weights={onnx_export.path}"])):
        out = tmp_path / name
        done = vlm_cli(
            *[
                "run",
                TASK,
                "-p",
                "count=10",
                "-p",
                "seed=1",
                "-p",
                f"upscale={upscale}",
                *extra,
                "--out",
                str(out),
            ]
        )
        code, stderr = done.returncode, done.stderr
        assert code == 0, stderr
        files = sorted((out / "result" / "images").glob("*.png"))
        record = json.loads((out / "result" / "result.json").read_text())["provenance"]
        if name == "onnx":  # the exported file ran
            assert record["weights_sha256"] == {"generator": sha256_of(onnx_export.path)}
        outputs[name] = {f.name: np.asarray(Image.open(f)) for f in files}
    assert sorted(outputs["onnx"]) == sorted(outputs["torch"]) and len(outputs["torch"]) == 10
    names = sorted(outputs["torch"])
    _assert_same_images(
        [outputs["torch"][n] for n in names],
        [outputs["onnx"][n] for n in names],
        upscaled=upscale > 1,
    )
