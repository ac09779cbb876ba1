"""The layers of the medical networks whose pooled outputs feed the familiarity check.

A task's run and ``vlm train`` (which fits the familiarity model at the end of training, or
alone with ``--fit-ood-only``) read the same layers through a
:class:`~vlm_core.familiarity.FeatureTap` around the forward pass the task runs anyway; the
checkpoint's card records them (``card["features"]``), so that weights fitted with one choice
keep it if the default changes.

The choices were measured (``plugins/medical/README.md``, "Knowing its limits"): on held-out
generated inputs of validation seeds against the real scans and photographs installed
packages carry, these layers gave the highest AUROC with the fewest in-domain inputs flagged.

- segmentation UNet (2D and 3D): the second encoder level and the bottleneck;
- SwinUNETR: its bottleneck encoder (``encoder10``; not measured: no bundled weights);
- classification DenseNet: the stem's pooled map (``features.pool0``) and the first
  transition (``features.transition1``), texture and intensity statistics the synthetic
  training volumes share and real scans do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: What a card's ``features`` says about how the rows are pooled.
POOLING = "mean over positions per layer, each layer unit length, mean over windows"


def unet_layers(arch: Mapping[str, Any]) -> tuple[str, ...]:
    """MONAI ``UNet``'s second encoder level and its bottleneck, by module name.

    MONAI nests each level in ``SkipConnection(Sequential(down, SkipConnection(...), up))``:
    level 0 is ``model.0``, level i > 0 is ``model`` + ``.1.submodule`` * i + ``.0``, and the
    bottom block (the bottleneck) is ``model`` + ``.1.submodule`` * (levels - 1).
    """
    levels = len(arch["channels"])
    nest = ".1.submodule"
    encoder = "model" + nest + ".0" if levels > 2 else "model.0"
    return (encoder, "model" + nest * (levels - 1))


def segment_layers(arch: Mapping[str, Any]) -> tuple[str, ...]:
    """The layers a `medical.segment` network's familiarity reads (see the module doc)."""
    if arch.get("name") == "unet":
        return unet_layers(arch)
    if arch.get("name") == "swinunetr":
        return ("encoder10",)
    raise ValueError(f"no feature layers known for network '{arch.get('name')}'")


def classify_layers(arch: Mapping[str, Any]) -> tuple[str, ...]:
    """The layers a `medical.classify` DenseNet's familiarity reads (see the module doc)."""
    del arch  # every MONAI DenseNet has them, whatever its widths and depths
    return ("features.pool0", "features.transition1")


def card_entry(layers: tuple[str, ...]) -> dict[str, Any]:
    """The card's ``features``: which layers the familiarity model was fitted on."""
    return {"layers": list(layers), "pooling": POOLING}


def recorded_layers(card: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    """The layers ``card`` records (weights fitted with them), else ``default``."""
    recorded = (card.get("features") or {}).get("layers")
    return tuple(str(n) for n in recorded) if recorded else default
