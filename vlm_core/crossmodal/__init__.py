"""The cross-modal engine any plugin can use (see ``docs/crossmodal.md``).

- :mod:`~vlm_core.crossmodal.encoders` — :func:`load_clip`: any open_clip architecture with
  weights from a file, a pretrained tag or a hub reference; :class:`ClipEncoder` embeds images
  and texts (batched, on the device runtime, L2-normalised float32).
- :mod:`~vlm_core.crossmodal.zeroshot` — zero-shot classification from label names and prompt
  templates.
- :mod:`~vlm_core.crossmodal.index` — :class:`EmbeddingIndex`: cosine top-k retrieval between
  images and texts, saved to and loaded from a folder with integrity checks.
- :mod:`~vlm_core.crossmodal.identity` — :class:`ModelIdentity`, what makes two sets of
  embeddings comparable.

Importing this package imports neither torch nor open_clip; the names below load their module
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlm_core.crossmodal.encoders import (
        TEST_ARCH,
        ClipEncoder,
        cached_clip,
        load_clip,
        register_model_configs,
    )
    from vlm_core.crossmodal.identity import ModelIdentity
    from vlm_core.crossmodal.index import EmbeddingIndex, Hit
    from vlm_core.crossmodal.zeroshot import (
        DEFAULT_TEMPLATES,
        ZeroShotClassifier,
        ZeroShotResult,
        zero_shot,
        zero_shot_classifier,
    )

_EXPORTS = {
    "TEST_ARCH": "encoders",
    "ClipEncoder": "encoders",
    "cached_clip": "encoders",
    "load_clip": "encoders",
    "register_model_configs": "encoders",
    "ModelIdentity": "identity",
    "EmbeddingIndex": "index",
    "Hit": "index",
    "DEFAULT_TEMPLATES": "zeroshot",
    "ZeroShotClassifier": "zeroshot",
    "ZeroShotResult": "zeroshot",
    "zero_shot": "zeroshot",
    "zero_shot_classifier": "zeroshot",
}

__all__ = [
    "DEFAULT_TEMPLATES",
    "TEST_ARCH",
    "ClipEncoder",
    "EmbeddingIndex",
    "Hit",
    "ModelIdentity",
    "ZeroShotClassifier",
    "ZeroShotResult",
    "cached_clip",
    "load_clip",
    "register_model_configs",
    "zero_shot",
    "zero_shot_classifier",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vlm_core.crossmodal' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"vlm_core.crossmodal.{module}"), name)
    globals()[name] = value
    return value
