"""Parameter models of the art tasks (light: pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from vlm_core.tasks import ImageLimits, TaskParams, package_file

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
    init: str = Field(
        "",
        max_length=4096,
        description="Start the generator from these weights (a `vlm train art.generate` "
        "folder, checkpoint or shipped weights folder; their generator's tensors go into both "
        "G and its EMA, D starts new), to fine-tune them; the architecture (family, width, "
        "latent, size, styles) must match theirs (empty: a new generator).",
    )
    classifier_steps: int = Field(
        1000,
        ge=0,
        le=20_000,
        description="Steps fitting the feature network (a small CNN) as a classifier of the "
        "training split, for FID/KID features and style accuracy (0: untrained, seeded).",
    )


#: The styles art.style_transfer ships a feed-forward network for (``weights/style-NAME/``):
#: the bundled sample painting (``samples/style.png``, a painting the default GAN generated) and
#: the five procedural styles of :mod:`vlm_art.styles` (a test checks that they are the same).
BUILTIN_STYLES: tuple[str, ...] = (
    "painting",
    "geometric",
    "circles",
    "stripes",
    "pointillist",
    "brush",
)
DEFAULT_STYLE = "painting"


def network_file(style: str) -> Path:
    """The weights file of built-in style ``style``'s feed-forward network (``weights/style-NAME``,
    trained by ``vlm train art.style_transfer --param style=NAME``)."""
    return package_file("vlm_art", "weights", f"style-{style}", "model.safetensors")


_STYLE_HELP = (
    f"A built-in style ({', '.join(BUILTIN_STYLES)}: each has a trained feed-forward network) "
    "or the path of a style image (PNG/JPEG, checked like the inputs; restyled by optimisation)."
)


class TransferParams(TaskParams):
    style: str = Field(
        DEFAULT_STYLE,
        min_length=1,
        max_length=4096,
        description=_STYLE_HELP + " Every input file is a content image.",
    )
    method: Literal["auto", "feedforward", "optimize"] = Field(
        "auto",
        description="'feedforward': one pass of the style's trained network (under a second); "
        "'optimize': Gatys et al., the output's pixels optimised for `steps` steps (any style "
        "image; a minute or more per image on a CPU); 'auto': feedforward for `weights` and for "
        "a built-in style, unless backbone, backbone_weights or seed name another loss network "
        "than its network was trained against; optimize for a style image.",
    )
    weights: str = Field(
        "",
        max_length=4096,
        description="A `vlm train art.style_transfer` output folder or checkpoint: its style "
        "network is used instead of a built-in style's (the style it was trained for names "
        "the output; `style` is then not read).",
    )
    size: int = Field(256, ge=32, le=512, description="Side of the output's longer edge, pixels.")
    steps: int = Field(
        100, ge=1, le=2000, description="Optimisation steps (Adam on pixels; method=optimize)."
    )
    style_weight: float = Field(
        1e4, ge=0.0, le=1e9, description="Weight of the Gram-matrix style loss (method=optimize)."
    )
    content_weight: float = Field(
        1.0, ge=0.0, le=1e6, description="Weight of the feature content loss (method=optimize)."
    )
    lr: float = Field(
        0.03, ge=1e-4, le=1.0, description="Adam learning rate on pixels in [0, 1] (optimize)."
    )
    backbone: Literal["vgg11", "vgg16", "resnet18"] = Field(
        "vgg11",
        description="timm backbone whose feature maps define style and content (optimize).",
    )
    backbone_weights: str = Field(
        "",
        max_length=4096,
        description="Pretrained weights for the backbone (a path or timm:/hf-hub: name; empty: "
        "random weights, seeded, which work offline but give weaker stylisation; optimize).",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seeds the random backbone weights (optimize)."
    )


class TransferTrainParams(TaskParams):
    """`vlm train art.style_transfer`: a feed-forward network (Johnson et al. 2016) trained on
    content photographs against the optimisation method's losses (the same loss network, levels
    and relative losses; a lower style weight)."""

    style: str = Field(DEFAULT_STYLE, min_length=1, max_length=4096, description=_STYLE_HELP)
    style_size: int = Field(
        256,
        ge=32,
        le=1024,
        description="Longer edge of the style image, pixels (the optimisation method uses "
        "its output size; 256 is its default), which sets the texture's scale.",
    )
    crop: int = Field(128, ge=32, le=512, description="Side of the random training crops.")
    val_size: int = Field(
        256, ge=32, le=1024, description="Side of the held-out images' square centre crops."
    )
    val_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Share of images held out when --data has no train/ and val/ sub-folders.",
    )
    width: int = Field(
        16, ge=4, le=64, description="Channels of the full-resolution layers (x2, x4 below)."
    )
    blocks: int = Field(5, ge=0, le=16, description="Residual blocks at a quarter resolution.")
    style_weight: float = Field(
        10.0,
        ge=0.0,
        le=1e9,
        description="Weight of the Gram-matrix style loss. Lower than the optimisation's 1e4: "
        "that weight works there because the pixels start as the photograph and move 100 "
        "steps; a network minimising it fully gives up the content (README).",
    )
    content_weight: float = Field(
        1.0, ge=0.0, le=1e6, description="Weight of the feature content loss."
    )
    backbone: Literal["vgg11", "vgg16", "resnet18"] = Field(
        "vgg11", description="The loss network: a timm backbone's feature maps."
    )
    backbone_weights: str = Field(
        "",
        max_length=4096,
        description="Pretrained weights of the loss network (empty: random, seeded by "
        "backbone_seed, as the optimisation method's default).",
    )
    backbone_seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seeds the loss network's random weights."
    )
