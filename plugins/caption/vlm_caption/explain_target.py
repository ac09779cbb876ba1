"""caption.describe for the explain engine: which pixels make the captioner say a word.

The number explained is a log-probability under the captioner, teacher-forced on the caption
the task wrote: with ``-p explain=WORD``, that word's log-probability at its first place in the
caption, given the photo and the words before it; by default, the whole caption's
log-probability (the sum over its words, ``<eos>`` left out). Every method perturbs the photo
only; the words stay fixed, so the map says where in the photo the decoder found its evidence.

- inputs: the photo as the captioner preprocesses it (squashed to its square input size, never
  cropped, so the map maps back onto the whole photo by a resize);
- baseline: 0 after the tower's normalisation, i.e. the mean colour of its pretraining data
  (a flat grey photo), the usual "no content" input of a normalised convnet;
- Grad-CAM's layer: the image tower's feature stage the decoder attends to (the last spatial
  feature stage of the features-only timm model);
- batch: 32 perturbed photos a forward pass (the tower is lcnet_050, the decoder small).

Captions from an open_clip CoCa (``clip_model``) are not the captioner's and are not explained.
"""

from __future__ import annotations

from typing import Any

from vlm_caption.params import DescribeParams
from vlm_core.errors import UsageError
from vlm_core.explain.target import ExplainTarget
from vlm_core.tasks import RunContext
from vlm_core.types import Caption, Image

#: photos a forward pass of the perturbation methods
BATCH = 32


def describe_target(
    item: Image, outputs: dict[str, Any], params: DescribeParams, ctx: RunContext
) -> ExplainTarget:
    """The explain target of one described photo (see the module docstring)."""
    import torch

    from vlm_caption.model import UNSURE, load_captioner
    from vlm_core.explain.gradcam import find_target_layer

    if params.clip_model:
        raise UsageError(
            "explanations read the captioner; with clip_model the caption is open_clip's"
        )
    caption = outputs["caption"]
    assert isinstance(caption, Caption)
    text = caption.text.removeprefix(UNSURE)
    model = load_captioner(params.weights, ctx=ctx).captioner
    vocab = model.vocab
    words = vocab.encode(text)
    if not words:
        raise UsageError("the caption is empty: nothing to explain")
    names = [vocab.tokens[i] for i in words]
    if params.explain:
        wanted = params.explain.strip().lower()
        if wanted not in names:
            raise UsageError(
                f"explain='{params.explain}' is not a word of the caption ('{text}'); "
                "give one of its words, or nothing for the whole caption"
            )
        chosen = [names.index(wanted)]
        what = f"log-probability of the word '{wanted}' in '{text}'"
    else:
        chosen = list(range(len(words)))
        what = f"log-probability of the caption '{text}'"
    prefix = vocab.prefix(None, model.arch.max_positions)
    tokens = torch.tensor([*prefix, *words], device=model.device)
    inputs, targets = tokens[:-1][None], tokens[1:]
    places = torch.tensor([len(prefix) - 1 + k for k in chosen], device=model.device)
    model.eval()

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        logits = model(pixels, inputs.expand(pixels.shape[0], -1))
        logp = logits.float().log_softmax(-1)[:, places]  # (B, chosen, vocabulary)
        picked = logp.gather(2, targets[places][None, :, None].expand(pixels.shape[0], -1, 1))
        return picked[..., 0].sum(dim=1)

    pixels = model.pixels([item]).to(model.device)
    layer_name = find_target_layer(model.image_tower, pixels)
    layer = dict(model.image_tower.named_modules())[layer_name]
    return ExplainTarget(
        forward=forward,
        inputs=pixels,
        what=what,
        background=item,
        baseline=0.0,
        layer=layer,
        batch=BATCH,
        extra={"caption": text, "words": [names[k] for k in chosen], "layer": layer_name},
    )
