"""CoCa captioning through open_clip, when CoCa weights are present.

A CoCa model (``coca_ViT-B-32``, ``coca_ViT-L-14``, ... loaded with
:func:`~vlm_core.crossmodal.load_clip`, e.g. with the ``mscoco_finetuned_laion2b_s13b_b90k``
tag) embeds like any CLIP and also captions: its multimodal decoder reads the image tokens
through cross-attention. :func:`coca_captions` decodes greedily — the image is encoded once,
then each step runs the text tower and the decoder on the tokens so far and takes the most
likely next token — so it needs no ``transformers`` (which open_clip's own ``generate``
requires).

    encoder = load_clip("coca_ViT-B-32", "mscoco_finetuned_laion2b_s13b_b90k")
    coca_captions(encoder, images)        # ["a dog sitting on a couch", ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from vlm_core.crossmodal.encoders import ClipEncoder
from vlm_core.errors import UsageError
from vlm_core.runtime.policy import run_context
from vlm_core.types import Image

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["coca_captions", "is_coca"]

SOT, EOT = 49406, 49407  # open_clip's start- and end-of-text token ids


def is_coca(encoder: ClipEncoder) -> bool:
    """Whether the encoder's model is a CoCa (it has a multimodal text decoder)."""
    return hasattr(encoder.model, "text_decoder")


def coca_captions(
    encoder: ClipEncoder,
    images: Sequence[Image | PILImage],
    *,
    max_len: int = 30,
    min_len: int = 1,
) -> list[str]:
    """Greedy CoCa captions of ``images``.

    Args:
        encoder: a CoCa from :func:`load_clip`.
        images: core or PIL images.
        max_len: most tokens per caption (the end token included); capped by the text
            tower's context length.
        min_len: the end token is not allowed before this many tokens.
    """
    import open_clip

    if not is_coca(encoder):
        raise UsageError(
            f"{encoder.identity.arch} is not a CoCa model; captioning needs a coca_* "
            "architecture (open_clip.list_models())"
        )
    model: Any = encoder.model
    context = int(getattr(model, "context_length", 77) or 77)
    steps = max(1, min(max_len, context - 1))
    if min_len < 0 or min_len > steps:
        raise UsageError(f"min_len must be in [0, {steps}], got {min_len}")
    pixels = encoder.pixels(list(images)).to(encoder.policy.device)
    with run_context(encoder.policy), torch.inference_mode():
        image_latent, image_embs = model._encode_image(pixels)
        batch = pixels.shape[0]
        tokens = torch.full((batch, 1), SOT, dtype=torch.long, device=pixels.device)
        done = torch.zeros(batch, dtype=torch.bool, device=pixels.device)
        for step in range(steps):
            out = model(pixels, tokens, image_latent=image_latent, image_embs=image_embs,
                        output_labels=False)  # fmt: skip
            logits = out["logits"][:, -1].float()
            if step < min_len:
                logits[:, EOT] = -torch.inf
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, EOT), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == EOT
            if bool(done.all()):
                break
    texts = []
    for row in tokens[:, 1:].tolist():
        row = row[: row.index(EOT)] if EOT in row else row
        text = open_clip.decode(torch.tensor(row))
        texts.append(" ".join(text.replace("<end_of_text>", " ").split()))
    return texts
