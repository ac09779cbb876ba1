"""`vlm export caption.describe`: the captioner's image encoder as .pt2 and ONNX with its parity
check (held-out photos; BLEU-4 of the task's captions decoded from either encoder's memory),
and the refusals: the caption tasks do not run an encoder-only export, and corrupt or partial
exports are one line, exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from vlm_core.deploy.export import PARITY_SEED, Exported, export_task
from vlm_core.plugins import load_registry
from vlm_core.weights import sha256_of

pytest.importorskip("onnxruntime")

TASK = "caption.describe"
SAMPLE = Path(__file__).resolve().parents[1] / "vlm_caption" / "samples" / "teapot-crack.png"


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    """A private VLM_HOME (the vlm pytest plugin's): runs and the run store stay out of the
    user's own."""
    return vlm_home


def _export(out: Path, fmt: str) -> Exported:
    """``export_task`` with the registry of a private VLM_HOME (module fixtures run outside the
    per-test one)."""
    with pytest.MonkeyPatch.context() as patch:
        home = out.parent / "vlm-home"
        home.mkdir(exist_ok=True)
        patch.setenv("VLM_HOME", str(home))
        return export_task(TASK, out=out, fmt=fmt, registry=load_registry())


@pytest.fixture(scope="module", params=["pt2", "onnx"])
def exported(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Exported]:  # type: ignore[no-untyped-def]
    """The bundled captioner's image encoder exported (15-30 s each on the shared 2-core CPU,
    most of it the metric's beam search over 2 x 32 photos)."""
    folder = tmp_path_factory.mktemp(f"caption-{request.param}")
    yield _export(folder / "out", request.param)
    shutil.rmtree(folder, ignore_errors=True)


def test_the_exported_module_is_the_captioners_image_encoder() -> None:
    """The encoder holds only what ``encode_images`` reads and gives its memory tokens; the
    decoder reads them as it reads its own."""
    import numpy as np
    from PIL import Image as PILImage
    from vlm_caption.deploy import NETWORK, ImageEncoder, captions_from_memory, network, spec
    from vlm_caption.model import encode, load_captioner

    from vlm_core.types import Image

    photo = Image(np.asarray(PILImage.open(SAMPLE).convert("RGB")))
    loaded = load_captioner()
    captioner = loaded.captioner
    assert loaded.trained is not None
    encoder = network(loaded.trained)
    assert isinstance(encoder, ImageEncoder)
    names = {name.split(".")[0] for name, _ in encoder.named_parameters()}
    assert names == {"image_tower", "memory_proj", "memory_row", "memory_col", "memory_norm"}
    pixels = captioner.pixels([photo])
    with torch.no_grad():
        tokens = encoder(pixels)
        assert torch.equal(tokens, captioner.encode_images(pixels))
    ours = captions_from_memory(loaded, tokens)
    theirs = captioner.beam_search(None, beam=3, max_len=21, memory=encode(loaded, [photo]))
    assert ours == theirs.texts and "teapot" in ours[0]
    deploy = spec()
    assert not deploy.runs and deploy.outputs == ("memory",) and NETWORK != "captioner"
    assert [s.name for s in deploy.inputs] == ["pixels"]


def test_an_encoder_file_is_refused_by_the_caption_tasks_in_one_line(
    tmp_path: Path, vlm_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A garbage ONNX file alone, and one with a consistent sidecar of an encoder export:
    refused before onnxruntime reads it (exit 2, one line)."""
    from vlm_caption.deploy import NETWORK, spec
    from vlm_caption.model import default_weights

    folder = tmp_path / "export"
    folder.mkdir()
    onnx_file = folder / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07not an onnx graph" * 40)
    argv = ["run", TASK, str(SAMPLE), "--out", str(tmp_path / "o")]
    done = vlm_cli(*argv, "-p", f"weights={onnx_file}")
    code, stderr = done.returncode, done.stderr
    assert code == 2 and stderr.count("\n") == 1 and "no model.json beside it" in stderr, stderr
    card = json.loads((Path(default_weights()).parent / "model.json").read_text())["card"]
    sidecar = {
        "task": TASK,
        "card": card,
        "files": {"model.onnx": sha256_of(onnx_file)},
        "export": {"format": "onnx", "network": NETWORK, "runs": False, "note": spec().note},
    }
    (folder / "model.json").write_text(json.dumps(sidecar))
    done = vlm_cli(*argv, "-p", f"weights={folder}")
    code, stderr = done.returncode, done.stderr
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "cannot run as caption.describe's captioner: the export holds the captioner's image" \
        " encoder only" in stderr  # fmt: skip
    assert not (tmp_path / "o" / "result").exists()


@pytest.mark.slow
def test_the_encoder_exports_with_parity_and_the_same_captions(exported: Exported) -> None:
    parity = exported.parity
    tolerance = 1e-5 if exported.path.suffix == ".pt2" else 1e-4
    assert parity["passed"] and parity["seed"] == PARITY_SEED and parity["inputs"] == 8
    assert parity["max_abs"] <= tolerance
    metric = parity["metric"]
    assert metric["examples"] == 32 and metric["name"].startswith("BLEU-4")
    # the bundled captioner: BLEU-4 0.867 on 300 held-out photos (TRAINING.md)
    assert 0.7 <= metric["reference"] == metric["candidate"]
    sidecar = json.loads((exported.path.parent / "model.json").read_text())
    assert sidecar["export"]["runs"] is False
    assert sidecar["export"]["network"] == "captioner-image-encoder"
    assert sidecar["export"]["inputs"][0]["dynamic"] == {"0": "batch"}
    if exported.path.suffix == ".pt2":
        program = torch.export.load(str(exported.path)).module()
        from vlm_caption.model import load_captioner

        captioner = load_captioner().captioner
        pixels = torch.randn(5, 3, 128, 128, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            difference = (program(pixels) - captioner.encode_images(pixels)).abs().max()
        assert float(difference) <= 1e-5


@pytest.mark.slow
def test_vlm_run_refuses_the_exported_encoder(
    exported: Exported, tmp_path: Path, vlm_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    for task, extra in (
        ("caption.describe", [str(SAMPLE)]),
        ("caption.answer", [str(SAMPLE), "-p", "message=my teapot is cracked"]),
    ):
        out = tmp_path / task
        done = vlm_cli("run", task, *extra, "-p", f"weights={exported.path}", "--out", str(out))
        code, stderr = done.returncode, done.stderr
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert "the export holds the captioner's image encoder only" in stderr
        assert not (out / "result").exists()
    # a corrupt copy of the real export: its sha256 no longer fits
    copy = tmp_path / "corrupt"
    shutil.copytree(exported.path.parent, copy)
    broken = copy / exported.path.name
    broken.write_bytes(broken.read_bytes()[:200])
    done = vlm_cli(
        *["run", TASK, str(SAMPLE), "-p", f"weights={broken}", "--out", str(tmp_path / "o")]
    )
    code, stderr = done.returncode, done.stderr
    assert code == 2 and stderr.count("\n") == 1 and "sha256 mismatch" in stderr, stderr
