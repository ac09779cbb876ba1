"""Structured pruning of medical.segment's UNet (vlm_medical.prune) and fine-tuning from given
weights (-p init=): the pruned network is again the plugin's UNet, narrower, rebuilt from its
card and loaded strictly through the one weights path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import monai.networks.nets  # noqa: F401  # at collection: seconds that a first test would pay
import pytest
import torch
import torch_pruning  # noqa: F401  # at collection: it imports timm, seconds of a first test
from vlm_medical.prune import parameters, prune_segmenter, prune_unet
from vlm_medical.segment import SEGMENTERS, default_weights
from vlm_medical.synthetic import write_dataset

from vlm_core.errors import UsageError
from vlm_core.training import checkpoint as ckpt
from vlm_core.training.api import TrainRequest, train_task
from vlm_core.training.loop import TrainError
from vlm_core.weights import load_model

TINY = {"batch_size": 2, "device": "cpu", "tensorboard": False, "familiarity": False}


def _pruned_folder(folder: Path, dims: int, amount: float) -> tuple[Path, torch.nn.Module]:
    """The bundled ``dims``-D UNet pruned by ``amount``, written as a weights folder."""
    loaded = load_model(default_weights(dims), SEGMENTERS[dims])
    network = copy.deepcopy(loaded.module)
    arch = prune_unet(network, loaded.card["architecture"], amount)
    card = {**loaded.card, "architecture": arch, "compression": {"method": "prune"}}
    sidecar = {"task": "medical.segment", "plugin": "medical", "card": card,
               "params": {**loaded.params}}  # fmt: skip
    ckpt.write_checkpoint(folder, 0, network.state_dict(), sidecar, None, best=True, keep_last=1)
    return folder, network.eval()


@pytest.mark.parametrize("dims", [2, 3])
def test_half_the_channels_of_the_bundled_unet_load_strictly_from_the_card(
    tmp_path: Path, dims: int
) -> None:
    loaded = load_model(default_weights(dims), SEGMENTERS[dims])
    before = loaded.module.state_dict()["model.0.conv.unit0.conv.weight"].clone()
    folder, network = _pruned_folder(tmp_path, dims, 0.5)
    assert network.model[0].conv.unit0.conv.out_channels == 8
    again = load_model(str(folder), SEGMENTERS[dims])  # built from the card, loaded strictly
    assert again.card["architecture"]["channels"] == [8, 16, 32, 64]
    # convolutions have in x out weights: half of each leaves about a quarter
    assert parameters(again.module) < 0.3 * parameters(loaded.module)
    assert again.path.stat().st_size < 0.3 * loaded.path.stat().st_size
    x = torch.randn(2, 1, *[32] * dims)
    with torch.no_grad():
        out = again.module(x)
        assert out.shape == (2, 2, *[32] * dims)
        torch.testing.assert_close(out, network(x))
    # the bundled (cached) network is not touched
    assert torch.equal(loaded.module.state_dict()["model.0.conv.unit0.conv.weight"], before)


def test_a_quarter_of_the_channels_is_a_uniform_cut() -> None:
    loaded = load_model(default_weights(2), SEGMENTERS[2])
    arch = prune_unet(copy.deepcopy(loaded.module), loaded.card["architecture"], 0.25)
    assert arch["channels"] == [12, 24, 48, 96]


def test_training_starts_from_the_init_weights_and_keeps_their_architecture(
    tmp_path: Path,
) -> None:
    """One step at a vanishing learning rate: the trained tensors are the pruned ones."""
    init, network = _pruned_folder(tmp_path / "pruned", 2, 0.5)
    data = write_dataset(tmp_path / "data", 4, seed=5, size=64, dims=2)
    params = {"spatial_dims": 2, "patch": 32, "roi": 32, "init": str(init)}
    config = {**TINY, "max_steps": 1, "lr": 1e-9, "warmup_steps": 0}
    train_task(TrainRequest("medical.segment", data, tmp_path / "run", params, config))
    best = ckpt.find_checkpoint(tmp_path / "run", "best")
    assert best is not None
    card = best.sidecar["card"]
    assert card["architecture"]["channels"] == [8, 16, 32, 64]
    assert card["compression"] == {"method": "prune"}
    assert card["init"]["path"].startswith(str(init))
    state = best.model_state()
    for name, tensor in network.state_dict().items():
        torch.testing.assert_close(state[name], tensor, atol=1e-6, rtol=0)


def test_init_weights_of_the_other_dimension_are_refused(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", 2, seed=6, size=32, dims=3)
    params = {"patch": 16, "roi": 16, "init": default_weights(2)}
    request = TrainRequest("medical.segment", data, tmp_path / "run", params,
                           {**TINY, "max_steps": 1})  # fmt: skip
    with pytest.raises(TrainError, match="is a 2D network; train it with -p spatial_dims=2"):
        train_task(request)


def test_only_unet_torch_weights_are_pruned(tmp_path: Path) -> None:
    swin = SimpleNamespace(card={"architecture": {"name": "swinunetr"}}, exported="",
                           path=tmp_path / "model.safetensors")  # fmt: skip
    with pytest.raises(UsageError, match="prune takes torch weights of a UNet"):
        prune_segmenter(swin, 0.5, tmp_path / "out", 7_100_000)  # type: ignore[arg-type]


@pytest.mark.slow
def test_prune_segmenter_writes_a_vlm_train_folder(tmp_path: Path) -> None:
    """The whole path, briefly: prune, fine-tune 2 steps on 6 generated images, and the best
    checkpoint loads through load_model with its model.json (task, card, file sha256)."""
    loaded = load_model(default_weights(2), SEGMENTERS[2])
    out = tmp_path / "out"
    made = prune_segmenter(loaded, 0.5, out, 7_100_000, images=6, steps=2,
                           config={**TINY, "val_every": 2})  # fmt: skip
    assert made.name == "model.safetensors" and made.is_relative_to(out)
    sidecar = json.loads((made.parent / "model.json").read_text())
    assert sidecar["task"] == "medical.segment"
    assert sidecar["card"]["compression"]["channels_after"] == [8, 16, 32, 64]
    assert sidecar["card"]["compression"]["finetune"]["data_seed"] == 7_300_000
    again = load_model(str(made), SEGMENTERS[2])
    assert again.sha256 == sidecar["files"]["model.safetensors"]
    assert parameters(again.module) == sidecar["card"]["compression"]["parameters_after"]
    assert (out / "pruned").is_dir()
