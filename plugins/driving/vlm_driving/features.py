"""What the detector's familiarity check looks at: the pooled outputs of its feature pyramid.

Every torchvision detector the plugin builds sees an image through a feature pyramid network
(``backbone.fpn``): P3-P5 from its layer blocks and, for FCOS and RetinaNet, P6 and P7. The
heads read these maps, so their spatial means, each made unit length and joined
(:class:`~vlm_core.familiarity.FeatureTap`), describe the image as the detector sees it, at
no extra forward pass. They were chosen by measurement against the backbone's stages and
single levels (the plugin README, "Knowing its limits").

:func:`detect_with_features` is the one forward pass both the run
(:class:`~vlm_driving.detector.Detector`) and the familiarity fitting (``TrainSetup.features``)
call, so the features fitted are those the run computes. Images go through the detector in
groups of one size: torchvision pads a batch to its largest image, so an image batched with
larger ones would see (and pool) padding that it does not see alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

#: The feature pyramid's outputs of the detectors the plugin builds (the layer blocks are P3,
#: P4, P5...; P6 and P7 are the extra levels of FCOS and RetinaNet).
FPN = "backbone.fpn"


def feature_layers(module: nn.Module) -> list[str]:
    """The dotted names of ``module``'s feature pyramid outputs: its layer blocks, then P6 and
    P7 where it has them."""
    names = [name for name, _ in module.named_modules()]
    blocks = sorted(
        (n for n in names if n.startswith(f"{FPN}.layer_blocks.") and n.count(".") == 3),
        key=lambda n: int(n.rsplit(".", 1)[1]),
    )
    extra = [n for n in (f"{FPN}.extra_blocks.p6", f"{FPN}.extra_blocks.p7") if n in names]
    return blocks + extra


_TAPPED: weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, list[str]]] = (
    weakref.WeakKeyDictionary()
)


def _tap_target(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """The feature pyramid of ``module`` and its output layers' names within it, looked up
    once per module (each call then hooks a small module's layers, not the detector's
    hundreds)."""
    found = _TAPPED.get(module)
    if found is None:
        layers = feature_layers(module)
        found = (module.get_submodule(FPN), [name[len(FPN) + 1 :] for name in layers])
        _TAPPED[module] = found
    return found


def size_groups(images: Sequence[torch.Tensor]) -> list[list[int]]:
    """The indices of ``images`` ((3, H, W) each) grouped by size, in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    return list(groups.values())


def detect_with_features(
    call: Callable[[list[torch.Tensor]], Any],
    module: nn.Module,
    images: Sequence[torch.Tensor],
    *,
    features: bool = True,
) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor | None]:
    """Run the detector ``call`` (the module, or its compiled wrapper) on float (3, H, W)
    ``images`` in groups of one size; with ``features``, also the pooled pyramid features of
    each image, (N, D) in the images' order (None without)."""
    from vlm_core.familiarity import FeatureTap

    outputs: list[dict[str, torch.Tensor] | None] = [None] * len(images)
    rows: list[torch.Tensor | None] = [None] * len(images)
    fpn, layers = _tap_target(module) if features else (module, [])
    for group in size_groups(images):
        batch = [images[i] for i in group]
        if layers:
            with FeatureTap(fpn, layers) as tap:
                found = call(batch)
            for i, row in zip(group, tap.features(), strict=True):
                rows[i] = row
        else:
            found = call(batch)
        for i, out in zip(group, found, strict=True):
            outputs[i] = out
    done = [o for o in outputs if o is not None]
    if not layers or not images:
        return done, None
    return done, torch.stack([r for r in rows if r is not None])
