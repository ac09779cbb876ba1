"""The device runtime: device and precision policy, model preparation, the process-wide model
cache, out-of-memory back-off, the streaming batch executor, seeding.

Submodules import torch; this package's namespace loads them on first attribute access, so
``vlm_core.runtime.seeding`` stays importable without torch.
"""

from __future__ import annotations

from vlm_core.lazy import lazy_exports

_EXPORTS = {
    "RuntimePolicy": "policy", "policy_for": "policy", "prepare_model": "policy",
    "run_context": "policy", "to_input": "policy", "parse_dtype": "policy",
    "ModelCache": "cache", "CacheKey": "cache", "model_cache": "cache",
    "map_with_oom_backoff": "oom", "OutOfMemoryError": "oom", "is_oom": "oom",
    "StreamingExecutor": "executor", "ItemResult": "executor",
    "ImagePipeline": "pipeline",
    "seed_everything": "seeding", "set_deterministic": "seeding",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
