"""Parameter models of the caption tasks (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vlm_core.tasks import TaskParams

_WEIGHTS = Field(
    "",
    max_length=1000,
    description="Captioner weights: a `vlm train caption.describe` output folder, checkpoint "
    "or model file (empty: the bundled captioner of the generated product photos).",
)
_CLIP_MODEL = Field(
    "",
    max_length=200,
    description="An open_clip architecture (e.g. ViT-B-32) for zero-shot tags and search "
    "instead of the captioner (empty: use the captioner).",
)
_CLIP_WEIGHTS = Field(
    "",
    max_length=1000,
    description="The open_clip model's weights: a local file, an open_clip pretrained tag "
    "(e.g. laion2b_s34b_b79k) or hf-hub:org/repo (needed with clip_model).",
)


def _check_clip_pair(clip_model: str, clip_weights: str) -> None:
    """``clip_model`` and ``clip_weights`` go together: a parameter that would be ignored is
    refused before the run, not dropped."""
    if clip_weights and not clip_model:
        raise ValueError(
            "clip_weights is given without clip_model; name the open_clip architecture the "
            "weights belong to (e.g. -p clip_model=ViT-B-32) or drop clip_weights"
        )
    if clip_model and not clip_weights:
        raise ValueError(
            "clip_model needs clip_weights (a file, an open_clip pretrained tag or hf-hub:org/repo)"
        )


class DescribeParams(TaskParams):
    beam: int = Field(3, ge=1, le=8, description="Beam width of caption decoding (1: greedy).")
    max_words: int = Field(20, ge=2, le=40, description="Longest caption, in words.")
    tags: str = Field(
        "",
        max_length=2000,
        description="Comma-separated labels to tag the image with (empty: the catalogue's "
        "products, colours and problems).",
    )
    top_k: int = Field(5, ge=1, le=20, description="Tags reported, most likely first.")
    explain: str = Field(
        "",
        max_length=40,
        description="With -p explainer=...: the word of the caption whose log-probability is "
        "explained (empty: the whole caption's)",
    )
    weights: str = _WEIGHTS
    clip_model: str = _CLIP_MODEL
    clip_weights: str = _CLIP_WEIGHTS

    @model_validator(mode="after")
    def _clip_pair(self) -> DescribeParams:
        _check_clip_pair(self.clip_model, self.clip_weights)
        return self


class AnswerParams(TaskParams):
    message: str = Field(
        "",
        max_length=2000,
        description="The customer's message that came with the photo.",
    )
    knowledge_base: str = Field(
        "",
        max_length=1000,
        description="The support knowledge base, a YAML file of problems, policies and reply "
        "templates (empty: the bundled one).",
    )
    min_confidence: float = Field(
        0.6,
        ge=0.05,
        le=0.99,
        description="Below this confidence in the product or the problem, ask a clarifying "
        "question instead of answering.",
    )
    weights: str = _WEIGHTS


class SearchParams(TaskParams):
    folder: str = Field(
        "",
        max_length=1000,
        description="The catalogue: a folder of images (sub-folders included), indexed on "
        "first use.",
    )
    query: str = Field(
        "", max_length=500, description="Find catalogue images that match this text."
    )
    image: str = Field(
        "",
        max_length=1000,
        description="Or find catalogue images similar to this image file.",
    )
    k: int = Field(5, ge=1, le=50, description="How many images to return.")
    index: str = Field(
        "",
        max_length=1000,
        description="Where the index is kept (empty: FOLDER/.vlm-index/ENGINE); rebuilt when "
        "the folder's files change.",
    )
    weights: str = _WEIGHTS
    clip_model: str = _CLIP_MODEL
    clip_weights: str = _CLIP_WEIGHTS

    @model_validator(mode="after")
    def _clip_pair(self) -> SearchParams:
        _check_clip_pair(self.clip_model, self.clip_weights)
        return self


class CaptionTrainParams(TaskParams):
    init_weights: str = Field(
        "",
        max_length=1000,
        description="Start from these captioner weights (a `vlm train caption.describe` output, "
        "checkpoint or file; 'bundled': the bundled captioner) and keep their architecture and "
        "vocabulary: fine-tuning. Empty: a new model from the parameters below.",
    )
    augment: Literal["none", "photometric"] = Field(
        "none",
        description="Training photo augmentation (vlm_caption.augment): 'photometric' draws a "
        "random exposure (up to ±1.3 stops), colour jitter, Gaussian blur (sigma 0.3-2 px) and "
        "JPEG quality (20-90) per photo each time it is read, leaving a quarter as generated; "
        "the familiarity model is then fitted on such photos too.",
    )
    backbone: str = Field(
        "lcnet_050", max_length=100, description="timm architecture of the image tower."
    )
    backbone_weights: str = Field(
        "",
        max_length=1000,
        description="Pretrained weights of the image tower (a timm tag, hf-hub:..., or a "
        "local file; empty: random initialisation).",
    )
    image_size: int = Field(128, ge=32, le=512, description="Side of the input images, pixels.")
    feature_level: int = Field(
        2,
        ge=-1,
        le=5,
        description="The tower's feature map that the decoder attends to (timm index; 2: "
        "stride 8, a 16x16 grid at 128 px).",
    )
    width: int = Field(128, ge=32, le=1024, description="Decoder width.")
    depth: int = Field(2, ge=1, le=12, description="Decoder blocks.")
    heads: int = Field(4, ge=1, le=16, description="Attention heads (must divide width).")
    dropout: float = Field(0.1, ge=0.0, le=0.5, description="Decoder dropout.")
    max_positions: int = Field(
        32, ge=8, le=128, description="Longest decoder sequence (question + caption + end)."
    )
    min_count: int = Field(1, ge=1, le=1000, description="Words seen fewer times become <unk>.")
    label_smoothing: float = Field(0.0, ge=0.0, le=0.5, description="Of the token loss.")
    val_fraction: float = Field(
        0.1, ge=0.0, le=0.5, description="Share of images held out for validation."
    )
    val_beam: int = Field(
        1, ge=1, le=8, description="Beam width of validation decoding (1: greedy)."
    )
    val_captions_only: bool = Field(
        True,
        description="Validate on caption items only (question items still train).",
    )
