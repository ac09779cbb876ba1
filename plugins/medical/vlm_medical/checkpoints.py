"""Networks from `vlm train` checkpoints, shared by the medical tasks: a bad ``weights``
parameter is the request's fault (one line, exit 2), the bundled weights are the plugin's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlm_core.errors import ParameterError
from vlm_core.weights.trained import TrainedWeights


def load_network(
    ref: str,
    *,
    default: str,
    task: str,
    device: torch.device,
    build: Callable[[dict[str, Any]], nn.Module],
) -> tuple[nn.Module, TrainedWeights]:
    """The network ``build(card["architecture"])`` with the weights of ``ref`` (``default``
    when empty), in eval mode on ``device``, through the core's model cache."""
    from vlm_core.runtime.cache import CacheKey, model_cache
    from vlm_core.weights import load_into, requested
    from vlm_core.weights.trained import load_trained

    # the bundled weights are the plugin's own (their failure is the plugin's, exit 1); the
    # ones a weights= names are the request's (exit 2)
    with requested("weights", ref):
        trained = load_trained(ref or default, plugin="medical", task=task)
    architecture = trained.card.get("architecture")
    if not isinstance(architecture, dict):
        raise ParameterError(f"weights={ref!r}: {trained.path} has no architecture in its sidecar")

    def factory() -> nn.Module:
        network = build(architecture)
        with requested("weights", ref):
            load_into(network, trained.state_dict, plugin="medical", source=trained.path)
        return network.eval().requires_grad_(False).to(device)

    label = architecture.get("name") or architecture.get("variant") or "network"
    key = CacheKey(f"{task}:{label}", trained.sha256, str(device), "float32")
    cache = model_cache()
    network = cache.acquire(key, factory)
    cache.release(key)  # kept cached (LRU) but evictable between runs
    return network, trained
