"""art.style_transfer's feed-forward style networks: the network at odd sizes, the bundled
networks loaded through the core's weights path (verified, recorded), which method a request
runs by and its one-line errors, a tiny training through the core trainer, the CLI, and the
optimisation method still working beside them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from vlm_art.params import BUILTIN_STYLES, TransferParams, network_file
from vlm_art.styles import STYLES

from vlm_core.errors import InputError, ParameterError, VLMError
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

VLM = [sys.executable, "-m", "vlm_core.cli"]
SAMPLES = Path(__file__).parents[1] / "vlm_art" / "samples"
CONTENT = SAMPLES / "content.png"
#: a 4-channel network with one block: what the tiny training makes
TINY_TRAIN = {"width": 4, "blocks": 1, "crop": 32, "val_size": 32, "style_size": 32}


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    return vlm_home


def run(inputs: list[Path], **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest("art.style_transfer", [str(p) for p in inputs], dict(params),
                         device="cpu")  # fmt: skip
    return run_task(request, registry=load_registry(), keep_results=True)


def stylised(outcome, i: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    return outcome.results[i].outputs["stylised"].pixels


def test_the_built_in_styles_are_the_painting_and_the_procedural_styles() -> None:
    assert ("painting", *STYLES) == BUILTIN_STYLES
    assert TransferParams().style == "painting" and TransferParams().method == "auto"
    for style in BUILTIN_STYLES:  # each ships its network, small, with its sidecar
        file = network_file(style)
        assert file.is_file() and file.stat().st_size <= 5 * 2**20, file
        sidecar = json.loads((file.parent / "model.json").read_text())
        assert sidecar["task"] == "art.style_transfer"
        assert sidecar["card"]["style"]["name"] == style
        assert sidecar["command"][:3] == ["vlm", "train", "art.style_transfer"]


@pytest.mark.parametrize("shape", [(17, 33), (5, 70), (64, 64), (1, 16)])
def test_the_network_keeps_any_size_and_gives_an_image(shape: tuple[int, int]) -> None:
    from vlm_art.stylenet import StyleNet, architecture, stylise

    torch.manual_seed(0)
    net = StyleNet(architecture(width=4, blocks=1)).eval()
    x = torch.rand(1, 3, *shape)
    with torch.inference_mode():
        out = stylise(net, x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_a_built_in_style_runs_its_bundled_network_verified_and_recorded(tmp_path: Path) -> None:
    from vlm_art.feedforward import bundled_recipe

    from vlm_core.weights import load_model

    content = tmp_path / "odd.png"
    PILImage.fromarray(np.asarray(PILImage.open(CONTENT))[:37, :53]).save(content)
    out = run([content], style="stripes", size=53)
    pixels = stylised(out)
    assert pixels.shape == (37, 53, 3) and pixels.dtype == np.uint8
    assert out.results[0].outputs["stylised"].name == "odd-in-stripes"
    loaded = load_model("", bundled_recipe("stripes"))
    sidecar = json.loads((network_file("stripes").parent / "model.json").read_text())
    assert loaded.sha256 == sidecar["files"]["model.safetensors"]
    assert out.results[0].provenance.weights_sha256 == {"style-stripes": loaded.sha256}
    # the same request twice gives the same image (one network, no randomness)
    assert np.array_equal(stylised(run([content], style="stripes", size=53)), pixels)


def test_a_batch_gives_what_one_by_one_gives(tmp_path: Path) -> None:
    """Images of one size go through the network together, others alone: the same pixels as
    one call per image (instance norm keeps each image's statistics its own)."""
    photo = np.asarray(PILImage.open(CONTENT))
    files = []
    for i, crop in enumerate([photo[:64, :48], photo[10:74, 20:68], photo[:40, :64]]):
        files.append(tmp_path / f"{i}.png")
        PILImage.fromarray(crop).save(files[-1])
    request = RunRequest("art.style_transfer", [str(f) for f in files], {"style": "circles"},
                         device="cpu", batch_size=3)  # fmt: skip
    together = run_task(request, registry=load_registry(), keep_results=True)
    for i, file in enumerate(files):
        alone = stylised(run([file], style="circles")).astype(int)
        # the same up to float rounding: a batched convolution may sum in another order
        assert np.abs(stylised(together, i).astype(int) - alone).max() <= 1, file


def test_a_corrupt_copy_of_a_network_is_refused_by_its_sha256(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(network_file("circles").parent, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(VLMError, match="sha256 mismatch") as info:
        run([CONTENT], weights=str(copy), size=32)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_the_method_follows_the_style_and_the_settings() -> None:
    from vlm_art.transfer import plan

    def chosen(**params: object) -> tuple[str, str | None]:
        method, style = plan(TransferParams(**params))  # type: ignore[arg-type]
        return method, style.name if style else None

    assert chosen() == ("feedforward", "painting")
    assert chosen(style="brush") == ("feedforward", "brush")
    assert chosen(style=str(CONTENT)) == ("optimize", "content")
    assert chosen(style="brush", method="optimize") == ("optimize", "brush")
    assert chosen(weights="/somewhere") == ("feedforward", None)
    # another loss network than the one the network was trained against: auto optimises
    assert chosen(style="brush", backbone="resnet18") == ("optimize", "brush")
    assert chosen(style="brush", seed=3) == ("optimize", "brush")
    # the optimisation's own settings do not change the choice
    assert chosen(style="brush", steps=7, style_weight=1e5, lr=0.1) == ("feedforward", "brush")
    # ...but an explicit feedforward runs the network
    assert chosen(style="brush", backbone="resnet18", method="feedforward") == (
        "feedforward",
        "brush",
    )


def test_bad_styles_and_methods_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        run([CONTENT], style="stripe")
    assert str(info.value) == (
        "unknown style 'stripe' (built-in styles: painting, geometric, circles, stripes, "
        "pointillist, brush; or the path of a style image); did you mean 'stripes'?"
    )
    with pytest.raises(InputError, match=r"^method=feedforward: no trained network for style "
                                         r"image .*content.png \(the built-in styles"):  # fmt: skip
        run([CONTENT], style=str(CONTENT), method="feedforward")
    with pytest.raises(ParameterError, match=r"^weights names a trained style network, which "
                                             r"method=optimize does not use"):  # fmt: skip
        run([CONTENT], weights=str(network_file("brush").parent), method="optimize")
    with pytest.raises(InputError, match=r"^style image .*missing.png does not exist$"):
        run([CONTENT], style=str(tmp_path / "missing.png"))
    with pytest.raises(VLMError):
        run([CONTENT], method="fastest")


def test_the_optimisation_still_runs_and_names_its_seed() -> None:
    out = run([CONTENT], style="circles", method="optimize", size=32, steps=2, seed=3)
    assert out.results[0].outputs["stylised"].name == "content-in-circles-seed3"
    assert stylised(out).shape == (32, 32, 3)
    assert out.results[0].provenance.weights_sha256 == {}  # a random backbone: no weights file


def test_the_trained_network_lowers_the_style_loss_of_a_held_out_photograph() -> None:
    """The bundled stripes network on scikit-image's astronaut (held out from its training):
    the output's style loss, as the optimisation measures it, is well under the photograph's."""
    from skimage import data
    from vlm_art import style_images
    from vlm_art.feedforward import bundled_recipe
    from vlm_art.optimize import CONTENT_LEVEL, StyleTransfer, content_loss, gram, style_loss
    from vlm_art.stylenet import stylise
    from vlm_art.tensors import to_tensor

    from vlm_core.weights import load_model

    photo = to_tensor(style_images.resized(data.astronaut(), 128))
    net = load_model("", bundled_recipe("stripes")).model
    with torch.inference_mode():
        out = stylise(net, photo)
        loss_net = StyleTransfer("vgg11", seed=0)
        style = to_tensor(style_images.pixels(style_images.Style("stripes"), 256))
        grams = [gram(f) for f in loss_net.features(style)]
        plain, styled = loss_net.features(photo), loss_net.features(out)
        before, after = float(style_loss(plain, grams)), float(style_loss(styled, grams))
        kept = float(content_loss(styled[CONTENT_LEVEL], plain[CONTENT_LEVEL]))
    assert after < 0.5 * before, (after, before)
    assert kept < 1.0, kept  # the content is still there (0: unchanged)


def test_the_training_loss_is_the_optimisations_and_trains_the_network_only(
    tmp_path: Path,
) -> None:
    """The builder's setup on tiny data: its loss on a batch is the optimisation's content and
    style losses of each image, its gradients reach the style network and not the loss network,
    and its card names the style and the loss network a run compares with."""
    from vlm_art.content import write_tiny
    from vlm_art.optimize import CONTENT_LEVEL, content_loss, gram, style_loss
    from vlm_art.params import TransferTrainParams
    from vlm_art.train_transfer import build

    from vlm_core.tasks import TrainContext

    params = TransferTrainParams(**TINY_TRAIN, style="geometric", backbone="resnet18")
    ctx = TrainContext(task="art.style_transfer", plugin="art", device="cpu")
    setup = build(write_tiny(tmp_path / "data"), params, ctx)
    assert len(setup.train_data) == 4 * 16 and len(setup.val_data) == 2  # type: ignore[arg-type]
    batch = torch.stack([setup.train_data[0], setup.train_data[5]])
    assert batch.shape == (2, 3, 32, 32) and 0 <= float(batch.min()) <= float(batch.max()) <= 1
    out = setup.loss(setup.model, batch)  # type: ignore[misc]
    out["loss"].backward()
    assert all(p.grad is not None for p in setup.model.parameters())
    loss_net = setup.loss.network  # type: ignore[union-attr]
    assert all(p.grad is None for p in loss_net.model.parameters())
    with torch.no_grad():  # the optimisation's own functions on the same images
        y = setup.model(batch)
        style = loss_net.features(to_style(params.style_size))
        feats, ref = loss_net.features(y), loss_net.features(batch)
        c = content_loss(feats[CONTENT_LEVEL], ref[CONTENT_LEVEL])
        s = style_loss(feats, [gram(f) for f in style])
    assert torch.allclose(out["preds"], torch.stack([c, s], 1), rtol=1e-4)
    assert torch.isclose(out["loss"], c.mean() + params.style_weight * s.mean(), rtol=1e-4)
    assert setup.card["style"] == {"name": "geometric", "source": "built-in", "size": [32, 32],
                                   "render_seed": 0}  # fmt: skip
    assert setup.card["loss_network"] == {"backbone": "resnet18", "backbone_weights": "",
                                          "seed": 0}  # fmt: skip


def to_style(side: int) -> torch.Tensor:
    from vlm_art import style_images
    from vlm_art.tensors import to_tensor

    return to_tensor(style_images.pixels(style_images.Style("geometric"), side))


@pytest.mark.slow
def test_a_tiny_training_gives_weights_a_run_takes(tmp_path: Path) -> None:
    """Two steps through the core trainer on crops of the sample photograph: the folder is
    usable at once as weights=, recorded in the provenance, named after its style."""
    from vlm_art.content import write_tiny

    from vlm_core.training.api import TrainRequest, train_task
    from vlm_core.weights.trained import load_trained

    data = write_tiny(tmp_path / "data")
    request = TrainRequest("art.style_transfer", data, tmp_path / "train",
                           params={**TINY_TRAIN, "style": "geometric", "backbone": "resnet18"},
                           config={"max_steps": 2, "batch_size": 2, "val_every": 2,
                                   "device": "cpu", "tensorboard": False})  # fmt: skip
    result = train_task(request, registry=load_registry())
    assert result.status == "completed", result.message
    for key in ("val_loss", "val_content", "val_style"):
        assert np.isfinite(result.last_values[key]), result.last_values
    trained = load_trained(str(tmp_path / "train"), plugin="art", task="art.style_transfer")
    assert trained.card["style"]["name"] == "geometric"
    out = run([CONTENT], weights=str(tmp_path / "train"), size=40)
    assert stylised(out).shape == (40, 40, 3)
    assert out.results[0].outputs["stylised"].name == "content-in-geometric"
    assert out.results[0].provenance.weights_sha256 == {"style-network": trained.sha256}


def test_training_needs_held_out_images(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    PILImage.open(CONTENT).save(tmp_path / "one" / "a.png")
    from vlm_core.training.api import TrainRequest, train_task

    request = TrainRequest("art.style_transfer", tmp_path / "one", tmp_path / "out",
                           params=TINY_TRAIN, config={"max_steps": 1, "device": "cpu"})  # fmt: skip
    with pytest.raises(InputError, match="holds 1 training and 0 held-out content images"):
        train_task(request, registry=load_registry())
    assert not (tmp_path / "out").exists()


def test_the_cli_writes_a_built_in_style(tmp_path: Path) -> None:
    done = subprocess.run([*VLM, "run", "art.style_transfer", str(CONTENT), "-p", "style=brush",
                           "-p", "size=96", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = tmp_path / "out" / "content" / "stylised.png"
    with PILImage.open(written) as im:
        assert im.size == (96, 96) and im.mode == "RGB"
    assert "content-in-brush" in done.stdout
