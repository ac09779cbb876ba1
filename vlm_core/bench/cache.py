"""The model cache under a budget: cycle through models and record what it holds."""

from __future__ import annotations

from typing import Any


def bench_cache(
    models: tuple[str, ...] = (
        "resnet18",
        "resnet34",
        "vit_tiny_patch16_224",
        "convnext_atto",
        "efficientnet_b0",
    ),
    *,
    device: str = "auto",
    cycles: int = 10,
    budget_models: int = 2,
) -> dict[str, Any]:
    """Cycle ``cycles`` times through ``models`` with a budget the size of the
    ``budget_models`` largest; report the most the cache ever held against the budget."""
    import torch

    from vlm_core.backbones import create_backbone
    from vlm_core.bench.timing import peak_device_mb, peak_host_rss_mb
    from vlm_core.runtime import CacheKey, ModelCache, policy_for, prepare_model
    from vlm_core.runtime.cache import module_nbytes

    policy = policy_for(device)
    sizes = {name: module_nbytes(create_backbone(name, num_classes=None).model) for name in models}
    budget = sum(sorted(sizes.values())[-budget_models:])
    cache = ModelCache(budget)
    held_max = 0
    device_mb: list[float] = []
    for _ in range(cycles):
        for name in models:
            key = CacheKey(name, None, str(policy.device), policy.dtype_name)

            def build(name: str = name) -> Any:
                return prepare_model(create_backbone(name, num_classes=None).model, policy)

            with cache.lease(key, build):
                held_max = max(held_max, cache.stats().bytes)
            if policy.device.type == "cuda":
                device_mb.append(torch.cuda.memory_allocated(policy.device) / 2**20)
    stats = cache.stats()
    return {
        "bench": "model_cache",
        "device": str(policy.device),
        "models": list(models),
        "model_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()},
        "budget_mb": round(budget / 2**20, 1),
        "max_held_mb": round(held_max / 2**20, 1),
        "within_budget": held_max <= budget,
        "requests": cycles * len(models),
        "hits": stats.hits,
        "misses": stats.misses,
        "evictions": stats.evictions,
        "max_device_allocated_mb": round(max(device_mb), 1) if device_mb else None,
        "peak_device_mb": peak_device_mb(policy.device),
        "peak_host_mb": round(peak_host_rss_mb(), 1),
    }
