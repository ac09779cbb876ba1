"""`art.style_transfer`'s ``method=feedforward``: one pass of a trained style network
(:mod:`vlm_art.stylenet`) per image, loaded through the core's one weights path
(:func:`vlm_core.weights.load_model`: sha256 verified against its ``model.json``, kept in the
process's model cache, recorded in the provenance).

Each built-in style ships its network in ``weights/style-NAME/`` (trained by
``vlm train art.style_transfer --param style=NAME``, see the README); ``weights=`` names one
trained by the user, for any style image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlm_art import stylenet
from vlm_art.params import TransferParams, network_file
from vlm_core.tasks import RunContext
from vlm_core.weights import ModelRecipe, load_model

TASK = "art.style_transfer"
#: What a card must hold for a run: how to build the network and which style it paints.
NEEDS = ("architecture", "style")

#: A style network the request names with ``weights=`` (no default: it must be named).
USER_NETWORK = ModelRecipe(task=TASK, name="style-network", build=stylenet.build, needs=NEEDS)


def bundled_recipe(style: str) -> ModelRecipe:
    """The recipe of built-in style ``style``'s network: its weights are the plugin's own (a
    failure to load them is the plugin's fault, exit 1). Cheap to make: the model cache keys a
    loaded network by the recipe's task and name, not by this object."""
    return ModelRecipe(
        task=TASK,
        name=f"style-{style}",
        build=stylenet.build,
        default=lambda: str(network_file(style)),
        needs=NEEDS,
    )


def bundled_card(style: str) -> Mapping[str, Any]:
    """The card of a built-in style's network as its ``model.json`` records it (JSON only, no
    torch); empty when the file is missing (loading it then says so)."""
    from vlm_core.weights.layout import read_sidecar

    return dict((read_sidecar(network_file(style)) or {}).get("card") or {})


def loss_network_differences(params: TransferParams, card: Mapping[str, Any]) -> list[str]:
    """The loss network settings of ``params`` (backbone, its weights, its seed) that differ
    from the one the network of ``card`` was trained against (``card["loss_network"]``), as
    ``name=value``; empty: the network answers this request."""
    trained = card.get("loss_network") or {}
    return [
        f"{key}={getattr(params, key)!r}"
        for key, value in trained.items()
        if hasattr(params, key) and getattr(params, key) != value
    ]


def run(
    inputs: Sequence[Any], params: TransferParams, style: str | None, ctx: RunContext
) -> list[dict[str, Any]]:
    """Restyle each content image with the network of built-in ``style`` (None: the one
    ``params.weights`` names)."""
    import torch

    from vlm_art.tensors import content_tensor, to_pixels
    from vlm_core.types import Image

    recipe = USER_NETWORK if style is None else bundled_recipe(style)
    loaded = load_model(params.weights if style is None else "", recipe, ctx=ctx)
    params = loaded.run_params(params)  # the card's `inference` settings the user did not set
    painted = str(loaded.card["style"]["name"])
    contents = [content_tensor(item, params.size) for item in inputs]
    # images of one size go through the network together (instance norm keeps each its own)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, content in enumerate(contents):
        by_size.setdefault(tuple(content.shape), []).append(i)
    outputs: dict[int, torch.Tensor] = {}
    done = 0
    for indices in by_size.values():
        batch = torch.cat([contents[i] for i in indices]).to(loaded.device)
        with torch.inference_mode():
            stylised = stylenet.stylise(loaded.model, batch)
        outputs.update((i, stylised[k : k + 1]) for k, i in enumerate(indices))
        done += len(indices)
        ctx.report(done / len(contents), f"{done} of {len(contents)} images")
    # each output is named for what made it: the content and the style
    return [
        {"stylised": Image(to_pixels(outputs[i]), name=f"{item.name or 'image'}-in-{painted}")}
        for i, item in enumerate(inputs)
    ]
