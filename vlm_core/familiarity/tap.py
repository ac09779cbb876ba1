"""Pooled features of named layers, captured during the forward pass a task runs anyway.

::

    with FeatureTap(network, "encoder.layer3") as tap:
        logits = network(batch)  # the task's own forward pass, unchanged
    features = tap.features()  # (rows, dims): one row per batch item and call

The hook pools each layer's output over its spatial positions (``(B, C, *spatial)``) or its
tokens (``(B, L, D)``, with ``tokens=True``) into one row per batch item, detached in float32,
so the check adds a mean per layer to the forward pass. With several layers each is made unit
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


def pool_features(output: Any, *, tokens: bool = False) -> torch.Tensor:
    """(B, D) float32: ``output`` (a tensor, or the first tensor of a tuple/list/dict) averaged
    over its spatial positions, or over its tokens when ``tokens``."""
    import torch

    if isinstance(output, dict):
        output = next(iter(output.values()))
    while isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise FamiliarityError(f"a tapped layer returned {type(output).__name__}, not a tensor")
    x = output.detach().float()
    if x.ndim == 2:
        return x
    if tokens:
        return x.flatten(1, -2).mean(1) if x.ndim > 3 else x.mean(1)
    return x.flatten(2).mean(2)


class FeatureTap:
    """Forward hooks on ``layers`` of ``module`` (dotted names, as in ``named_modules``) that
    keep each call's pooled output; removed on leaving the ``with`` block."""

    def __init__(self, module: nn.Module, layers: str | Sequence[str], *, tokens: bool = False):
        self.module = module
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.tokens = tokens
        self._rows: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self._handles: list[Any] = []

    def __enter__(self) -> FeatureTap:
        named = dict(self.module.named_modules())
        for name in self.layers:
            layer = named.get(name)
            if layer is None:
                raise FamiliarityError(
                    f"{type(self.module).__name__} has no layer '{name}' to take features from"
                )
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Any:
        def keep(_module: Any, _inputs: Any, output: Any) -> None:
            self._rows[name].append(pool_features(output, tokens=self.tokens))

        return keep

    def features(self) -> torch.Tensor:
        """(rows, dims) on the CPU: every call's rows in order, the layers joined."""
        import torch

        per_layer = []
        for name in self.layers:
            rows = self._rows[name]
            if not rows:
                raise FamiliarityError(f"layer '{name}' was not run while the tap was on")
            x = torch.cat(rows).cpu()
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
