"""Pooled features of named layers, captured during the forward pass a task runs anyway.

::

    with FeatureTap(network, "encoder.layer3") as tap:
        logits = network(batch)  # the task's own forward pass, unchanged
    features = tap.features()  # (rows, dims): one row per batch item and call

The hook pools each layer's output over its spatial positions (``(B, C, *spatial)``) or its
tokens (``(B, L, D)``, with ``tokens=True``) into one row per batch item (the mean, and with
``stats=("mean", "std")`` the spread too), detached in float32, so the check adds a reduction
per layer to the forward pass. With several layers each is made unit
length before they are joined, so no layer outweighs the others. Rows accumulate over calls:
a volume run window by window gives one row per window, which the task averages into the
volume's row (:meth:`FeatureTap.mean`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vlm_core.familiarity.model import FamiliarityError

if TYPE_CHECKING:
    import torch
    from torch import nn


#: What a tap may keep of a layer's output over its positions or tokens.
STATISTICS = ("mean", "std", "max")


def pool_features(
    output: Any, *, tokens: bool = False, stats: Sequence[str] = ("mean",)
) -> torch.Tensor:
    """(B, D * len(stats)) float32: ``output`` (a tensor, or the first tensor of a
    tuple/list/dict) summarised over its spatial positions, or over its tokens when
    ``tokens``, by each of ``stats`` (``mean``; ``std`` and ``max`` keep how the activations
    are spread, which the mean alone loses: a photograph and a dark synthetic image can share
    a mean activation but not its spread). A (B, D) output is kept as it is."""
    import torch

    unknown = [s for s in stats if s not in STATISTICS]
    if unknown or not stats:
        raise FamiliarityError(f"unknown feature statistics {unknown or stats}; use {STATISTICS}")
    if isinstance(output, dict):
        output = next(iter(output.values()))
    while isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise FamiliarityError(f"a tapped layer returned {type(output).__name__}, not a tensor")
    x = output.detach().float()
    if x.ndim == 2:
        return x
    # (B, C, positions) for maps, (B, D, tokens) for token sequences
    x = x.flatten(1, -2).transpose(1, 2) if tokens else x.flatten(2)
    parts = {
        "mean": lambda: x.mean(2),
        "std": lambda: x.std(2, unbiased=False),
        "max": lambda: x.amax(2),
    }
    return torch.cat([parts[name]() for name in stats], dim=1)


class FeatureTap:
    """Forward hooks on ``layers`` of ``module`` (dotted names, as in ``named_modules``) that
    keep each call's pooled output; removed on leaving the ``with`` block."""

    def __init__(
        self,
        module: nn.Module,
        layers: str | Sequence[str],
        *,
        tokens: bool = False,
        stats: Sequence[str] = ("mean",),
    ) -> None:
        self.module = module
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.tokens = tokens
        self.stats = tuple(stats)
        self._rows: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self._handles: list[Any] = []

    def __enter__(self) -> FeatureTap:
        for name in self.layers:
            try:
                layer = self.module.get_submodule(name)
            except AttributeError:
                raise FamiliarityError(
                    f"{type(self.module).__name__} has no layer '{name}' to take features from"
                ) from None
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Any:
        def keep(_module: Any, _inputs: Any, output: Any) -> None:
            self._rows[name].append(pool_features(output, tokens=self.tokens, stats=self.stats))

        return keep

    def features(self) -> torch.Tensor:
        """(rows, dims) on the network's device: every call's rows in order, the layers
        joined (``Familiarity.judge`` scores them there)."""
        import torch

        per_layer = []
        for name in self.layers:
            rows = self._rows[name]
            if not rows:
                raise FamiliarityError(f"layer '{name}' was not run while the tap was on")
            x = torch.cat(rows)
            per_layer.append(
                x if len(self.layers) == 1 else torch.nn.functional.normalize(x, dim=1)
            )
        return torch.cat(per_layer, dim=1)

    def mean(self) -> torch.Tensor:
        """(1, dims): the mean of all rows (one input run in several calls, e.g. windows)."""
        return self.features().mean(0, keepdim=True)

    def clear(self) -> None:
        for rows in self._rows.values():
            rows.clear()
