"""`vlm export caption.describe`: the captioner's image encoder as ONNX or ``.pt2``.

The exported graph is :meth:`vlm_core.crossmodal.Captioner.encode_images`: preprocessed
``pixels`` (B, 3, S, S) float32 -> memory tokens (B, h*w, width), B a dynamic batch axis and S
the captioner's ``image_size`` (128 for the bundled one). That is the image tower, the memory
projection, the memory tokens' 2D positions and their layer norm: the part of the captioner that
sees pixels, and most of its computation per photo. The text decoder (its KV-cached beam
search, the recognition questions' scoring, the tags) and the familiarity check stay in torch,
so the export is not the whole network a run needs: its spec says ``runs=False`` and
`vlm run caption.* -p weights=model.onnx` refuses it on one line (exit 2).

Parity: preprocessed held-out generated product photos (data seed ``seed``; the plugin's own
data seeds are 0-77, 1234 and 4321, README "Seeds"); the metric is BLEU-4 of `caption.describe`'s
captions (its beam search and defaults, :func:`captions_from_memory`) decoded by the torch decoder
from the memory the encoder under test gives, against each photo's five reference captions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vlm_core.deploy.spec import Axis, DeploySpec, ParityCases, TensorSpec

if TYPE_CHECKING:
    from vlm_caption.model import Loaded
    from vlm_caption.products import Photo
    from vlm_core.crossmodal import Captioner
    from vlm_core.tasks import TaskParams
    from vlm_core.weights import LoadedModel, ModelRecipe

#: photos per encoder call (`caption.describe` runs 16 a call)
BATCH = Axis("batch", min=1, max=256)
#: held-out photos the metric captions
METRIC_PHOTOS = 32
#: photos per call while the metric encodes and decodes (the task's batch size)
METRIC_BATCH = 16
#: the batch sizes the parity inputs cycle through (the dynamic axis at several sizes)
CASE_BATCHES = (1, 2, 3)
#: the name of the exported network in its sidecar: not the "captioner" a run loads
NETWORK = "captioner-image-encoder"


class ImageEncoder(nn.Module):
    """The captioner's image encoder as the exported graph: ``pixels -> memory tokens``.

    It holds the parts :meth:`~vlm_core.crossmodal.Captioner.encode_images` reads (the image
    tower, the memory projection, row and column embeddings and layer norm) and runs that very
    method on them, so the export carries the encoder's weights only: wrapping the whole
    captioner, ``torch.export`` keeps every parameter (the decoder's too; 4.2 MB instead of
    0.3 MB for the bundled captioner). A change of ``encode_images`` that reads another part
    fails the export (AttributeError), not silently.
    """

    def __init__(self, captioner: Captioner) -> None:
        super().__init__()
        self.arch = captioner.arch
        self.image_tower = captioner.image_tower
        self.memory_proj = captioner.memory_proj
        self.memory_row = captioner.memory_row
        self.memory_col = captioner.memory_col
        self.memory_norm = captioner.memory_norm

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        from vlm_core.crossmodal import Captioner

        return Captioner.encode_images(self, pixels)  # type: ignore[arg-type]


def _recipe() -> ModelRecipe:
    """The captioner's recipe under the exported network's name (what the sidecar records)."""
    from vlm_caption.model import CAPTIONER

    return dataclasses.replace(CAPTIONER, name=NETWORK)


def _load(weights: str, params: TaskParams) -> LoadedModel:
    from vlm_core.weights import load_model

    return load_model(weights, _recipe())


def _captioner(loaded: LoadedModel) -> Captioner:
    from vlm_core.crossmodal import Captioner

    model = loaded.module
    if not isinstance(model, Captioner):
        raise TypeError(f"{loaded.path} is not a captioner")
    return model


def network(loaded: LoadedModel) -> nn.Module:
    """The exported module: the captioner's image encoder."""
    return ImageEncoder(_captioner(loaded)).eval()


def _photo_pixels(captioner: Captioner, photos: Sequence[Photo]) -> torch.Tensor:
    """The task's own preprocessing of generated photos: (N, 3, S, S) float32."""
    from vlm_core.types import Image

    return captioner.pixels([Image(p.pixels) for p in photos])


def example(loaded: LoadedModel) -> tuple[torch.Tensor, ...]:
    """Two photos' pixels at the captioner's input size."""
    side = _captioner(loaded).arch.image_size
    return (torch.zeros(2, 3, side, side),)


def captions_from_memory(loaded: Loaded, tokens: torch.Tensor) -> list[str]:
    """`caption.describe`'s captions (its beam search with the task's default beam and
    length) of images whose memory tokens are ``tokens`` (B, h*w, width), decoded by the torch
    decoder: the run's own decoding, after an image encoder other than the captioner's."""
    from vlm_caption.describe import _captions
    from vlm_caption.params import DescribeParams

    memory = loaded.captioner.memory(tokens)
    texts, _ = _captions(loaded, memory, DescribeParams.model_validate({}))
    return texts


def bleu4(
    loaded: LoadedModel, encoder: Callable[[torch.Tensor], torch.Tensor], seed: int,
    n: int = METRIC_PHOTOS,
) -> float:  # fmt: skip
    """BLEU-4 of `caption.describe`'s captions of ``n`` held-out photos (data seed ``seed``)
    against their five references, the memory given by ``encoder`` (the torch image encoder
    or its export) and the words by the torch decoder."""
    from vlm_caption.evaluation import held_out_photos
    from vlm_caption.model import _loaded
    from vlm_caption.products import captions
    from vlm_core.crossmodal import CaptionMetrics

    captioner = _captioner(loaded)
    wrapped = _loaded(loaded)
    photos = held_out_photos(n, captioner.arch.image_size, seed)
    metrics = CaptionMetrics(bleu_orders=(4,))
    for start in range(0, n, METRIC_BATCH):
        chunk = photos[start : start + METRIC_BATCH]
        with torch.no_grad():
            tokens = encoder(_photo_pixels(captioner, chunk))
        metrics.update(captions_from_memory(wrapped, tokens), [captions(p) for p in chunk])
    return float(metrics.compute()["bleu4"])


def cases(loaded: LoadedModel, count: int, seed: int) -> ParityCases:
    """``count`` batches (1, 2, 3, ... photos) of preprocessed held-out photos of data seed
    ``seed``; the metric's photos are those of data seed ``seed + 1``."""
    from vlm_caption.evaluation import held_out_photos

    captioner = _captioner(loaded)
    sizes = [CASE_BATCHES[i % len(CASE_BATCHES)] for i in range(count)]
    photos = held_out_photos(sum(sizes), captioner.arch.image_size, seed)
    pixels = _photo_pixels(captioner, photos)
    return ParityCases(
        inputs=[(batch,) for batch in pixels.split(sizes)],
        metric=lambda encoder: bleu4(loaded, encoder, seed + 1),
        metric_name="BLEU-4 of the captions decoded from its memory",
        metric_count=METRIC_PHOTOS,
    )


def spec() -> DeploySpec:
    """`caption.describe`'s deploy spec (``TaskSpec.deploy``)."""
    return DeploySpec(
        load=_load,
        inputs=(TensorSpec("pixels", {0: BATCH}),),
        outputs=("memory",),
        example=example,
        cases=cases,
        network=network,
        runs=False,
        note=(
            "the captioner's image encoder only (preprocessed pixels -> memory tokens); "
            "the text decoder (beam search, the recognition questions, tags) and the "
            "familiarity check need the torch captioner"
        ),
    )
