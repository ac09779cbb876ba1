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
- :mod:`~vlm_core.crossmodal.captioner` — :class:`Captioner`: a timm image tower and a
  Transformer text decoder with cross-attention that captions images and answers questions
  about them; greedy and beam-search decoding with a KV cache.
- :mod:`~vlm_core.crossmodal.vocab` — :class:`Vocab`, the captioner's word vocabulary.
- :mod:`~vlm_core.crossmodal.caption_data` — COCO-captions JSON and caption / QA CSV readers,
  the dataset and its collate.
- :mod:`~vlm_core.crossmodal.caption_setup` — :func:`captioner_setup`, the trainer's setup.
- :mod:`~vlm_core.crossmodal.caption_metrics` — BLEU-1..4, ROUGE-L and CIDEr-D.
- :mod:`~vlm_core.crossmodal.coca` — :func:`coca_captions`: CoCa captioning through open_clip
  when CoCa weights are present.

Importing this package imports neither torch nor open_clip; the names below load their module
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm_core.lazy import lazy_exports

if TYPE_CHECKING:
    from vlm_core.crossmodal.caption_data import (
        CaptionDataset,
        CaptionItem,
        collate_captions,
        read_caption_csv,
        read_captions,
        read_coco_captions,
        split_items,
    )
    from vlm_core.crossmodal.caption_metrics import (
        CaptionMetrics,
        CIDErD,
        RougeL,
        cider_d,
    )
    from vlm_core.crossmodal.caption_setup import caption_loss, captioner_setup
    from vlm_core.crossmodal.captioner import Captioner, CaptionerArch, Decoded, Memory
    from vlm_core.crossmodal.coca import coca_captions, is_coca
    from vlm_core.crossmodal.encoders import (
        TEST_ARCH,
        ClipEncoder,
        cached_clip,
        load_clip,
        register_model_configs,
    )
    from vlm_core.crossmodal.identity import ModelIdentity
    from vlm_core.crossmodal.index import EmbeddingIndex, Hit
    from vlm_core.crossmodal.vocab import Vocab, normalise_caption
    from vlm_core.crossmodal.zeroshot import (
        DEFAULT_TEMPLATES,
        ZeroShotClassifier,
        ZeroShotResult,
        zero_shot,
        zero_shot_classifier,
    )

_EXPORTS = {
    "CaptionDataset": "caption_data",
    "CaptionItem": "caption_data",
    "collate_captions": "caption_data",
    "read_caption_csv": "caption_data",
    "read_captions": "caption_data",
    "read_coco_captions": "caption_data",
    "split_items": "caption_data",
    "CIDErD": "caption_metrics",
    "CaptionMetrics": "caption_metrics",
    "RougeL": "caption_metrics",
    "cider_d": "caption_metrics",
    "caption_loss": "caption_setup",
    "captioner_setup": "caption_setup",
    "Captioner": "captioner",
    "CaptionerArch": "captioner",
    "Decoded": "captioner",
    "Memory": "captioner",
    "coca_captions": "coca",
    "is_coca": "coca",
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
    "Vocab": "vocab",
    "normalise_caption": "vocab",
}

__all__ = [
    "DEFAULT_TEMPLATES",
    "TEST_ARCH",
    "CIDErD",
    "CaptionDataset",
    "CaptionItem",
    "CaptionMetrics",
    "Captioner",
    "CaptionerArch",
    "ClipEncoder",
    "Decoded",
    "EmbeddingIndex",
    "Hit",
    "Memory",
    "ModelIdentity",
    "RougeL",
    "Vocab",
    "ZeroShotClassifier",
    "ZeroShotResult",
    "cached_clip",
    "caption_loss",
    "captioner_setup",
    "cider_d",
    "coca_captions",
    "collate_captions",
    "is_coca",
    "load_clip",
    "normalise_caption",
    "read_caption_csv",
    "read_captions",
    "read_coco_captions",
    "register_model_configs",
    "split_items",
    "zero_shot",
    "zero_shot_classifier",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
