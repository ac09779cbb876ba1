"""Parameter models of the art tasks (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlm_core.tasks import ImageLimits, TaskParams

#: The content and style images of art.style_transfer: each is resized to ``size`` on its longer
#: edge and padded (content) or tiled (style) up to the backbone's stride on its shorter one, so
#: a strip more elongated than 16:1 would be mostly padding, and under 16 px there is nothing to
#: restyle.
TRANSFER_IMAGE_LIMITS = ImageLimits(min_side=16, max_aspect=16)


class GenerateParams(TaskParams):
    styles: str = Field(
        "",
        max_length=400,
        description="Comma-separated style names, used in turn (empty: every style of the "
        "weights in turn). Bundled weights: geometric, circles, stripes, pointillist, brush.",
    )
    count: int = Field(8, ge=1, le=64, description="Images to generate (mode 'samples').")
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seeds the latents: same seed, same images."
    )
    truncation: float = Field(
        0.0,
        ge=0.0,
        le=4.0,
        description="Latent truncation threshold (0: off; lower trades variety for fidelity).",
    )
    mode: Literal["samples", "interpolate"] = Field(
        "samples",
        description="'samples': count images; 'interpolate': frames between two seeds "
        "(seed, seed+1) in the first style, or between the first two styles at one seed.",
    )
    between: Literal["seeds", "styles"] = Field(
        "seeds", description="What mode 'interpolate' moves between."
    )
    frames: int = Field(
        8, ge=2, le=64, description="Frames of an interpolation (endpoints included)."
    )
    fps: float = Field(
        8.0, gt=0.0, le=60.0, description="Frames per second of the interpolation's animation."
    )
    upscale: int = Field(
        4, ge=1, le=16, description="Enlarge each image this many times (Lanczos; 1: native size)."
    )
    weights: str = Field(
        "",
        max_length=4096,
        description="A `vlm train art.generate` output folder or checkpoint (empty: the "
        "bundled conditional ResNet GAN, 32 px, five procedural styles).",
    )


class GenerateTrainParams(TaskParams):
    family: Literal["resnet", "dcgan"] = Field(
        "resnet",
        description="'resnet': the class-conditional SNGAN-style pair (hinge loss); 'dcgan': "
        "the baseline (with loss=bce and conditional=false for the classic DCGAN).",
    )
    image_size: int = Field(32, ge=16, le=128, description="Side in pixels (a power of two).")
    width: int = Field(32, ge=8, le=256, description="Channels of the full-resolution layer.")
    latent_dim: int = Field(128, ge=8, le=512, description="Size of the latent z.")
    conditional: bool = Field(
        True, description="Condition on the sub-folders as classes (false: ignore them)."
    )
    loss: Literal["hinge", "bce"] = Field(
        "hinge",
        description="GAN loss; hinge uses Adam betas (0, 0.99), bce DCGAN's (0.5, 0.999).",
    )
    diffaugment: bool = Field(
        True, description="DiffAugment (color, translation, cutout) on what D sees: small data."
    )
    r1_gamma: float = Field(0.0, ge=0.0, le=100.0, description="R1 penalty weight (0: off).")
    aux_weight: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Weight of the AC-GAN class loss: D also learns the "
        "styles of real images and G is pushed to make each fake read as its style "
        "(0: projection only; ignored without styles).",
    )
    n_critic: int = Field(
        1,
        ge=1,
        le=8,
        description="Discriminator updates per generator update (the batch is split between them).",
    )
    d_lr_ratio: float = Field(
        2.0,
        gt=0.0,
        le=16.0,
        description="D's learning rate over G's (TTUR; e.g. 4 with --lr 1e-4).",
    )
    ema_decay: float = Field(0.999, ge=0.0, le=0.9999, description="Decay of the EMA generator.")
    val_fraction: float = Field(
        0.1, ge=0.02, le=0.5, description="Share of images held out for FID/KID validation."
    )
    feature_network: Literal["auto", "bundled", "fit"] = Field(
        "auto",
        description="The network of validation FID/KID and style accuracy: 'bundled' (the "
        "style classifier trained on real procedural samples; needs those style names), 'fit' "
        "(a small CNN fitted to the training split), 'auto' (bundled for the procedural "
        "styles, otherwise fit).",
    )
    classifier_steps: int = Field(
        1000,
        ge=0,
        le=20_000,
        description="Steps fitting the feature network (a small CNN) as a classifier of the "
        "training split, for FID/KID features and style accuracy (0: untrained, seeded).",
    )


class TransferParams(TaskParams):
    style: str = Field(
        "",
        max_length=4096,
        description="Path of the style image (PNG/JPEG, checked like the inputs; empty: the "
        "bundled sample, a painting the default GAN generated). Every input file is a content "
        "image.",
    )
    size: int = Field(256, ge=32, le=512, description="Side of the output's longer edge, pixels.")
    steps: int = Field(100, ge=1, le=2000, description="Optimisation steps (Adam on pixels).")
    style_weight: float = Field(
        1e4, ge=0.0, le=1e9, description="Weight of the Gram-matrix style loss."
    )
    content_weight: float = Field(
        1.0, ge=0.0, le=1e6, description="Weight of the feature content loss."
    )
    lr: float = Field(0.03, ge=1e-4, le=1.0, description="Adam learning rate on pixels in [0, 1].")
    backbone: Literal["vgg11", "vgg16", "resnet18"] = Field(
        "vgg11", description="timm backbone whose feature maps define style and content."
    )
    backbone_weights: str = Field(
        "",
        max_length=4096,
        description="Pretrained weights for the backbone (a path or timm:/hf-hub: name; empty: "
        "random weights, seeded, which work offline but give weaker stylisation).",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the random backbone weights.")
