"""CoCa captioning through open_clip (vlm_core.crossmodal.coca) on the tiny test CoCa."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlm_core.crossmodal import TEST_ARCH, load_clip
from vlm_core.crossmodal.coca import EOT, SOT, coca_captions, is_coca
from vlm_core.errors import UsageError
from vlm_core.types import Image

COCA = "vlm-test-coca"


def images(n: int) -> list[Image]:
    rng = np.random.default_rng(0)
    return [Image((rng.random((40, 48, 3)) * 255).astype(np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def coca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local CoCa weights file (random weights, seed 1)."""
    encoder = load_clip(COCA, None, seed=1)
    path = tmp_path_factory.mktemp("coca") / "coca.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, path)
    return path


def test_coca_from_a_local_file_captions_as_its_own_forward_pass_decodes(coca_file) -> None:
    import open_clip

    encoder = load_clip(COCA, str(coca_file))
    assert is_coca(encoder) and encoder.weights_sha256
    batch = images(3)
    texts = coca_captions(encoder, batch, max_len=6)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    # the reference: greedy decoding by the full forward pass (image re-encoded every step)
    model = encoder.model
    pixels = encoder.pixels(batch)
    tokens = torch.full((3, 1), SOT)
    with torch.inference_mode():
        for _ in range(6):
            logits = model(pixels, tokens, output_labels=False)["logits"][:, -1]
            tokens = torch.cat([tokens, logits.argmax(-1)[:, None]], dim=1)
    for row, text in zip(tokens[:, 1:].tolist(), texts, strict=True):
        row = row[: row.index(EOT)] if EOT in row else row
        assert " ".join(open_clip.decode(torch.tensor(row)).split()) == text
    # the same model embeds too: CoCa is a CLIP
    assert encoder.encode_images(batch).shape == (3, encoder.dim)


def test_coca_refuses_a_plain_clip_and_bad_lengths(coca_file) -> None:
    with pytest.raises(UsageError, match="vlm-test-clip is not a CoCa model"):
        coca_captions(load_clip(TEST_ARCH, None), images(1))
    with pytest.raises(UsageError, match=r"min_len must be in \[0, 4\]"):
        coca_captions(load_clip(COCA, str(coca_file)), images(1), max_len=4, min_len=9)
