"""`-p init=WEIGHTS` of `vlm train art.generate`: the fine-tune starts from those weights'
generator (in G and in its EMA), and weights of another architecture are refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from vlm_art.generate import default_weights
from vlm_art.styles import STYLES
from vlm_art.train import _start_from

from vlm_core.errors import InputError
from vlm_core.gan import build_gan

ARCH = {"family": "resnet", "image_size": 32, "channels": 3, "latent_dim": 128,
        "num_classes": 5, "width": 16, "ema": True, "aux_classes": True}  # fmt: skip


def test_init_puts_the_shipped_generator_in_g_and_its_ema() -> None:
    gan = build_gan(ARCH)
    before = {k: v.clone() for k, v in gan["d"].state_dict().items()}
    _start_from(gan, "", tuple(sorted(STYLES)))
    shipped = {k[len("g_ema.") :]: v for k, v in load_file(default_weights()).items()}
    for part in ("g", "g_ema"):
        state = gan[part].state_dict()
        assert state.keys() == shipped.keys()
        assert all(torch.equal(state[k], shipped[k]) for k in shipped), part
    # D is not in the shipped weights: it stays as built
    assert all(torch.equal(v, before[k]) for k, v in gan["d"].state_dict().items())


def test_init_of_another_width_or_other_styles_is_refused() -> None:
    with pytest.raises(InputError, match="width"):
        _start_from(build_gan({**ARCH, "width": 8}), "", tuple(sorted(STYLES)))
    with pytest.raises(InputError, match="styles"):
        _start_from(build_gan(ARCH), "", ("a", "b", "c", "d", "e"))
